"""API keys with roles, and per-key rate limits.

Keys are presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Only their SHA-256
is configured; the presented key is hashed and compared with every configured hash using a
constant-time compare (no early exit), so timing says nothing about which key nearly matched.

Which role may call what (``admin`` may call everything):

=================================  ==========================================
endpoint                           roles
=================================  ==========================================
``POST /events``                   integrator
``POST /goals``                    integrator, operator
``GET /goals/{id}``                integrator, operator, analyst
``POST /ingest/{source}``          integrator
``POST /mappings/{source}/preview`` integrator, analyst
``POST /mappings/match``           integrator, analyst
``GET /mappings``                  integrator, operator, analyst
``GET /approvals[/{id}]``          operator, analyst
``POST /approvals/{id}/approve``   operator (the policy checks the human's role)
``POST /approvals/{id}/reject``    operator (the policy checks the human's role)
``POST /tasks/{id}/takeover``      operator (the policy checks ``task:takeover``)
``GET /halts``                     operator, analyst
``POST|DELETE /halts…``            operator
``GET /budgets``                   operator, analyst
``GET /audit/query|trace/{id}``    analyst
``POST /webhooks/{source}``        none: the Standard Webhooks signature is the credential
``/mcp``                           any key; each tool call needs its route's roles (docs/mcp.md)
``/healthz``, ``/readyz``, docs    none
=================================  ==========================================

Rate limits are a token bucket per key, in each gateway process (two replicas allow twice the
rate); an empty bucket answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentos_gateway.problems import Problem, auth_problem
from agentos_gateway.settings import ROLES, ApiKeySpec, GatewaySettings, Role

ENDPOINT_ROLES: dict[str, frozenset[Role]] = {
    "events.write": frozenset({"integrator"}),
    "goals.write": frozenset({"integrator", "operator"}),
    "goals.read": frozenset({"integrator", "operator", "analyst"}),
    "ingest.write": frozenset({"integrator"}),
    "mappings.preview": frozenset({"integrator", "analyst"}),
    "mappings.read": frozenset({"integrator", "operator", "analyst"}),
    "approvals.read": frozenset({"operator", "analyst"}),
    "approvals.vote": frozenset({"operator"}),
    "tasks.takeover": frozenset({"operator"}),
    "halts.read": frozenset({"operator", "analyst"}),
    "halts.write": frozenset({"operator"}),
    "budgets.read": frozenset({"operator", "analyst"}),
    "audit.read": frozenset({"analyst"}),
}
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key: what the gateway's configuration stores."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    name: str
    roles: frozenset[Role]
    tenant: str | None = None

    @property
    def principal(self) -> str:
        """The CloudEvent ``principal`` of events this caller submits."""
        return f"key:{self.name}"


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each request takes one."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float | None = None) -> float:
        """Take a token: 0.0 if granted, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ApiKeys:
    """The configured keys, their roles and their rate limiters."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.specs: tuple[ApiKeySpec, ...] = settings.api_keys
        self.anonymous = settings.allow_anonymous_loopback and not self.specs
        self._rate, self._burst = settings.rate_per_s, settings.burst
        self._buckets: dict[str, TokenBucket] = {}
        self._hashes = [(bytes.fromhex(s.sha256), s) for s in self.specs]

    def identify(self, presented: str | None, client_host: str | None) -> Principal:
        """The principal for a presented key (or an anonymous loopback caller); 401 otherwise."""
        if not presented:
            if self.anonymous and client_host in _LOOPBACK:
                return Principal("anonymous", frozenset(ROLES))
            raise auth_problem(
                401,
                "missing_api_key",
                "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                {"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(presented.encode()).digest()
        found: ApiKeySpec | None = None
        for stored, spec in self._hashes:
            if hmac.compare_digest(stored, digest):
                found = spec
        if found is None:
            raise auth_problem(
                401,
                "invalid_api_key",
                "the API key is not valid",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return Principal(found.name, frozenset(found.roles), found.tenant)

    def authorize(self, principal: Principal, action: str) -> None:
        """403 unless one of the principal's roles may perform ``action``; 429 when over its rate."""
        allowed = ENDPOINT_ROLES[action]
        if "admin" not in principal.roles and not (principal.roles & allowed):
            raise auth_problem(
                403,
                "forbidden",
                f"{action} needs one of the roles {_names(allowed | {'admin'})};"
                f" key {principal.name!r} has {_names(principal.roles) or 'none'}",
            )
        wait = self._bucket(principal.name).take()
        if wait > 0:
            raise auth_problem(
                429,
                "rate_limited",
                f"key {principal.name!r} is over its rate limit; retry in {wait:.2f}s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _bucket(self, name: str) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            spec = next((s for s in self.specs if s.name == name), None)
            rate = spec.rate_per_s if spec and spec.rate_per_s else self._rate
            burst = spec.burst if spec and spec.burst else self._burst
            bucket = self._buckets[name] = TokenBucket(rate, float(burst))
        return bucket


def check_tenant(principal: Principal, tenant: str) -> None:
    """403 when a tenant-bound key touches another tenant."""
    if principal.tenant is not None and tenant != principal.tenant:
        raise Problem(
            403,
            "wrong_tenant",
            f"key {principal.name!r} may only use tenant {principal.tenant!r}, not {tenant!r}",
            dlq=False,
        )


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return x_api_key or None


def _names(roles: Iterable[str]) -> str:
    return ", ".join(sorted(roles))
