"""Stream names and the subject naming rules, in one place.

Durable events live under ``agentos.<tenant>.<domain>.<event>`` and are all captured by
the ``AGENTOS_EVENTS`` stream; CloudEvents of foreign types (outside ``dev.agentos.``) that
integrators send are kept verbatim in the same log under ``ingress.raw.<tenant>``. Dead
letters live under ``dlq.agentos.<consumer>``, outside it, in ``AGENTOS_DLQ``. Nothing else may
use the ``agentos.`` or ``ingress.raw.`` prefixes, so request/reply traffic never lands in the
immutable log.
"""

from __future__ import annotations

import functools
import re

EVENTS_STREAM = "AGENTOS_EVENTS"
DLQ_STREAM = "AGENTOS_DLQ"
PAYLOADS_BUCKET = "AGENTOS_PAYLOADS"
HEALTH_BUCKET = "AGENTOS_HEALTH"
LEASES_BUCKET = "AGENTOS_LEASES"
"""Which replica of a service acts on which partition (``agentos_kernel.ownership``)."""

RAW_PREFIX = "ingress.raw."
EVENTS_SUBJECTS = ("agentos.>", RAW_PREFIX + ">")
DLQ_SUBJECTS = ("dlq.agentos.>",)

TYPE_PREFIX = "dev.agentos."
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TYPE = re.compile(r"^dev\.agentos\.([a-z_]+)\.([a-z_]+)\.v(\d+)$")


class NamingError(ValueError):
    """A tenant, type or subject breaks the naming rules."""


def check_token(kind: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise NamingError(f"{kind} {value!r} must match {_TOKEN.pattern} (one NATS subject token)")
    return value


def ce_type(name: str, version: int) -> str:
    """``goal.submitted``, 1 -> ``dev.agentos.goal.submitted.v1``."""
    return f"{TYPE_PREFIX}{name}.v{version}"


def parse_type(type_: str) -> tuple[str, str, int]:
    """``dev.agentos.goal.submitted.v1`` -> (``goal``, ``submitted``, 1)."""
    m = _TYPE.match(type_)
    if not m:
        raise NamingError(f"event type {type_!r} is not of the form dev.agentos.<domain>.<event>.v<N>")
    return m.group(1), m.group(2), int(m.group(3))


def is_foreign(type_: str) -> bool:
    """Whether a CloudEvent type is outside AgentOS's own namespace (``dev.agentos.``)."""
    return not type_.startswith(TYPE_PREFIX)


def raw_subject(tenant: str) -> str:
    """Where a foreign-type CloudEvent of a tenant is kept: ``ingress.raw.<tenant>``."""
    return RAW_PREFIX + check_token("tenant", tenant)


@functools.lru_cache(maxsize=4096)
def event_subject(tenant: str, type_: str) -> str:
    """The NATS subject of an event, derived from its tenant and type (a foreign type's is
    :func:`raw_subject`)."""
    if is_foreign(type_):
        return raw_subject(tenant)
    domain, event, _ = parse_type(type_)
    return f"agentos.{check_token('tenant', tenant)}.{domain}.{event}"


def domain_filter(domain: str, tenant: str = "*") -> str:
    """Filter subject for every event of one domain (``agentos.*.task.*``)."""
    return f"agentos.{tenant}.{domain}.*"


def tenant_filter(tenant: str) -> str:
    return f"agentos.{check_token('tenant', tenant)}.>"


def dlq_subject(consumer: str) -> str:
    return f"dlq.agentos.{check_token('consumer', consumer)}"
