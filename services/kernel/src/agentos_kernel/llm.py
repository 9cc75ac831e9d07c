"""Model calls for every service, through litellm: a model registry, routing, fallback chains, and a
record (tokens, cost, latency, error) of every attempt.

The registry comes from a YAML file (``AGENTOS_MODELS``) naming aliases for any litellm model
string — OpenAI, Anthropic, Ollama, vLLM … — or, when none is configured, from the offline
model the project ships (``AGENTOS_OFFLINE_MODEL_URL``). Each attempt is one
``litellm.acompletion`` with that alias's parameters; the chain below walks the fallbacks itself
(litellm's Router is not used: its retries, cooldowns and usage tracking cost CPU on every call
and would hide attempts from the record) so that each attempt is recorded with the task that
made it. The cost recorded is the registry's price when it gives one (entered into litellm's cost
map once, so litellm's own per-response pricing is a lookup, not a search), else litellm's.

Every call is governed: the messages are redacted (personal data and secrets become ``[EMAIL]``,
``[SECRET]`` …) before they leave the process, and the kill switches are obeyed — a call whose
agent, workflow, tenant or model is halted does not start, and one in flight when its switch is
turned on is cancelled. By default the call then *pauses* until the switch is lifted and runs
again (models halted on their own are skipped for the rest of the chain); ``pause_on_halt=False``
raises :class:`~agentos_kernel.control.Halted` instead.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from agentos_schemas.events import ModelCall
from pydantic import BaseModel, ConfigDict, Field

from agentos_kernel import control
from agentos_kernel.exceptions import ConfigError, Failed
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.redact import redactor

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# ``openai/`` models (hosted OpenAI and every OpenAI-compatible server: vLLM, the offline model …,
# and litellm's other OpenAI-compatible providers) go through litellm's own HTTP handler instead of
# the OpenAI SDK: the same answers, usage, costs and error classes for 20-35 % less CPU per call
# (benchmarks/RESULTS.md); the SDK's organization and project headers are added by ``LLM`` itself
# (:func:`openai_account_headers`). litellm (pinned) names the switch experimental; set it to False
# in the environment to use the SDK.
os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "True")

#: Role aliases charters use, and the offline model each maps to when no registry is configured.
OFFLINE_ALIASES = {"fast": "offline-fast", "smart": "offline-smart", "backup": "offline-backup"}


class ModelSpec(BaseModel):
    """One alias in the registry."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    alias: str
    model: str
    """Any litellm model string, e.g. ``openai/gpt-4o-mini``, ``anthropic/claude-sonnet-4``, ``ollama/llama3``."""
    api_base: str | None = None
    api_key_env: str | None = None
    """Environment variable holding the key (keys never live in the file)."""
    timeout_s: float = 60.0
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    max_context_tokens: int = 128_000


class ModelRegistry(BaseModel):
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    offline: bool = False
    """True when the registry is the shipped offline model."""

    def get(self, alias: str) -> ModelSpec:
        for spec in self.models:
            if spec.alias == alias:
                return spec
        raise ConfigError(f"model {alias!r} is not in the model registry ({', '.join(self.aliases())})")

    def aliases(self) -> list[str]:
        return [m.alias for m in self.models]

    @classmethod
    def load(cls, path: str | None = None, offline_url: str | None = None) -> ModelRegistry:
        path = path or os.environ.get("AGENTOS_MODELS")
        if path:
            try:
                return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
            except (OSError, ValueError) as exc:
                raise ConfigError(f"AGENTOS_MODELS={path!r}: {exc}") from None
        url = offline_url or os.environ.get("AGENTOS_OFFLINE_MODEL_URL")
        if not url:
            raise ConfigError(
                "no model configured: set AGENTOS_MODELS to a registry file, "
                "or AGENTOS_OFFLINE_MODEL_URL to the offline model (`agentos up` sets it)"
            )
        # Simulated prices, so cost accounting is exercised offline as it is with hosted models.
        return cls(
            offline=True,
            models=tuple(
                ModelSpec(
                    alias=alias,
                    model=f"openai/{name}",
                    api_base=url,
                    timeout_s=20,
                    input_cost_per_token=0.15e-6,
                    output_cost_per_token=0.60e-6,
                )
                for alias, name in offline_models(url).items()
            ),
        )


def offline_models(url: str) -> dict[str, str]:
    """Alias -> offline model: the role aliases, plus every model the offline server lists under
    its own name (a scenario may add fault-injection models)."""
    import httpx

    try:
        listed = httpx.get(f"{url.rstrip('/')}/models", timeout=3.0).json()["data"]
        names = [str(m["id"]) for m in listed]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        names = []
    return {**OFFLINE_ALIASES, **{n: n for n in names if n not in OFFLINE_ALIASES}}


class ModelCallFailed(Failed):
    """Every model in the chain failed; ``calls`` records each attempt.

    ``transient`` is True when every attempt failed because its provider was not available
    (unreachable, timed out, overloaded, rate-limited: :func:`transient`): the work should wait and
    try again, as for any unavailable dependency, not count a failed attempt."""

    code = "model_unavailable"

    def __init__(self, message: str, calls: list[ModelCall], *, transient: bool = False) -> None:
        super().__init__(message)
        self.calls = calls
        self.transient = transient
        self.retryable = transient  # an outage passes; a refused or failed request is tried no more


def transient(exc: BaseException) -> bool:
    """Whether a model call failed because the provider is not available now, not because of the call.

    Unreachable, timed out, rate-limited (429) or unavailable behind its gateway (502, 503, 504) is
    transient. A bad request, a refused key, an unknown model, a too-long context, and a plain 500
    (the provider failed on this request) are not: they fail the attempt, which is retried as the
    goal's limits allow. litellm reports a refused connection as a 500 ``InternalServerError``, so
    the cause chain is read down to the transport's own error; the first definite client error
    (a 4xx other than 408 and 429) on the way decides against."""
    import httpx
    import litellm
    import openai

    passing = (
        litellm.exceptions.APIConnectionError,
        litellm.exceptions.Timeout,
        litellm.exceptions.RateLimitError,
        litellm.exceptions.ServiceUnavailableError,
        openai.APIConnectionError,
        httpx.TransportError,
        ConnectionError,
        TimeoutError,
    )
    seen: BaseException | None = exc
    for _ in range(12):  # a cause chain is short; this bounds a cyclic one
        if seen is None:
            return False
        status = getattr(seen, "status_code", None)
        if isinstance(seen, passing) or status in (408, 429, 502, 503, 504):
            return True
        if isinstance(status, int) and 400 <= status < 500:
            return False
        seen = seen.__cause__ or seen.__context__
    return False


def _is_loopback(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def openai_account_headers() -> dict[str, str]:
    """The organization and project headers the OpenAI SDK sends from the environment
    (``OPENAI_ORGANIZATION`` or ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``), which litellm's own HTTP
    handler does not: sent with ``openai/`` calls while that handler is on."""
    if os.environ.get("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "").lower() != "true":
        return {}
    org = os.environ.get("OPENAI_ORGANIZATION") or os.environ.get("OPENAI_ORG_ID")
    project = os.environ.get("OPENAI_PROJECT_ID")
    return {k: v for k, v in (("OpenAI-Organization", org), ("OpenAI-Project", project)) if v}


class LLM:
    """Model calls by alias with a fallback chain."""

    def __init__(self, registry: ModelRegistry, *, pause_on_halt: bool = True, redact: bool = True) -> None:
        import litellm

        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.ERROR)
        self._acompletion = litellm.acompletion
        self.registry = registry
        self.pause_on_halt = pause_on_halt
        self.redact = redact
        self.params: dict[str, dict[str, Any]] = {}
        for spec in registry.models:
            params: dict[str, Any] = {"model": spec.model, "timeout": spec.timeout_s}
            if spec.api_base:
                params["api_base"] = spec.api_base
            params["api_key"] = os.environ.get(spec.api_key_env, "") if spec.api_key_env else "offline"
            if spec.model.startswith("openai/") and (headers := openai_account_headers()):
                params["extra_headers"] = headers
            # Prices given in the registry are applied here (see ``_cost``), not handed to litellm per
            # call: per-call prices make litellm re-register the model on every call.
            self.params[spec.alias] = params
        _register_prices(litellm, registry)

    def _guard(self, spec: ModelSpec) -> None:
        if os.environ.get("AGENTOS_ALLOW_LLM_CALLS") == "0" and not _is_loopback(spec.api_base):
            raise ConfigError(f"real model calls are disabled here (AGENTOS_ALLOW_LLM_CALLS=0): {spec.model!r}")

    def models(self, alias: str) -> tuple[str, ...]:
        """The names a model switch may use for ``alias``: the alias, the litellm string, its bare name."""
        model = self.registry.get(alias).model
        return alias, model, model.split("/", 1)[-1]

    async def complete(
        self, chain: list[str], messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[ModelCall]]:
        """Ask the first model in ``chain`` that answers; returns (response, every attempt).

        Waits while a kill switch covers the work (see the module docs) and never sends a
        message before it is redacted.
        """
        if self.redact:
            messages, _ = redactor().messages(messages)
        calls: list[ModelCall] = []
        state = control.state()
        while True:
            work = control.current_work()
            halt = state.covering(work) or (
                None if any(self._open(a) for a in chain) else state.covering(work.merged(models=self.models(chain[0])))
            )
            if halt is not None:
                if not self.pause_on_halt:
                    raise control.Halted(halt)
                await state.wait_change(timeout=5.0)
                continue
            try:
                return await self._chain([a for a in chain if self._open(a)], messages, calls, work, **kwargs)
            except control.Halted:
                if not self.pause_on_halt:
                    raise

    def _open(self, alias: str) -> bool:
        return control.state().covering(control.Work(models=self.models(alias))) is None

    async def _chain(
        self,
        chain: list[str],
        messages: list[dict[str, Any]],
        calls: list[ModelCall],
        work: control.Work,
        **kwargs: Any,
    ) -> tuple[Any, list[ModelCall]]:
        passing = bool(chain)  # every failure so far was transient
        for alias in chain:
            spec = self.registry.get(alias)
            self._guard(spec)
            started = time.perf_counter()
            try:
                async with control.state().guard(work.merged(models=self.models(alias))):
                    response = await self._acompletion(messages=messages, num_retries=0, **self.params[alias], **kwargs)
            except control.Halted as exc:
                calls.append(_failed_call(spec, str(exc), started))
                raise
            except Exception as exc:  # noqa: BLE001  (boundary: whatever a provider or litellm raises moves on to the next model; recorded on the call)
                FAULTS.note(f"call model {alias}", exc)
                passing = passing and transient(exc)
                calls.append(_failed_call(spec, f"{type(exc).__name__}: {exc}", started))
                continue
            calls.append(_answered_call(spec, response, started))
            return response, calls
        raise ModelCallFailed(
            f"every model failed ({', '.join(chain)}): {calls[-1].error if calls else ''}", calls, transient=passing
        )


def _failed_call(spec: ModelSpec, error: str, started: float) -> ModelCall:
    """The record of an attempt that got no answer; ``started`` is its ``time.perf_counter()``."""
    return ModelCall(
        model=spec.model,
        ok=False,
        error=error[:500],
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _answered_call(spec: ModelSpec, response: Any, started: float) -> ModelCall:
    """The record of an answered attempt: the tokens the response reports, their cost, the latency."""
    usage = getattr(response, "usage", None)
    tokens_in = getattr(usage, "prompt_tokens", 0) or 0
    tokens_out = getattr(usage, "completion_tokens", 0) or 0
    return ModelCall(
        model=spec.model,
        ok=True,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=_cost(spec, response, tokens_in, tokens_out),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _register_prices(litellm: Any, registry: ModelRegistry) -> None:
    """Enter the registry's prices into litellm's cost map once, under the key litellm prices a call
    by (``provider/model``), as litellm itself does for a call that carries its own prices.

    litellm prices every response it returns (``response_cost`` in its hidden params, and again for
    its logging payload), whatever the caller does with the figure. For a model its cost map lacks
    (a self-hosted or the offline model) every such lookup misses and walks the fallback
    generalization rules, on each call; registered, it is a dictionary hit, and litellm's figure is
    the registry's. What AgentOS records does not change: it computes the cost from the registry
    itself (``_cost``). A model the registry does not price is left to litellm's own cost map, and
    so is any model that two aliases price differently, or that one prices and another does not.
    """
    prices: dict[str, set[tuple[float, float] | None]] = {}
    for spec in registry.models:
        try:
            name, provider, _, _ = litellm.get_llm_provider(model=spec.model, api_base=spec.api_base)
        except litellm.exceptions.BadRequestError:  # what it raises for any model it cannot route:
            continue  # that model's first call fails, as it did before
        price = (
            None
            if spec.input_cost_per_token is None
            else (spec.input_cost_per_token, spec.output_cost_per_token or 0.0)
        )
        prices.setdefault(f"{provider}/{name}", set()).add(price)
    for key, found in prices.items():
        price = found.pop() if len(found) == 1 else None
        if price is None:
            continue
        entry = {
            "litellm_provider": key.split("/", 1)[0],
            "input_cost_per_token": price[0],
            "output_cost_per_token": price[1],
        }
        with contained(f"enter {key}'s registry price into litellm's cost map (any error: only a slower lookup)"):
            litellm.register_model({key: entry})  # a cheaper lookup, never a reason not to start


def _cost(spec: ModelSpec, response: Any, tokens_in: int, tokens_out: int) -> float:
    """The registry's prices when it gives them; otherwise litellm's cost map for known models."""
    if spec.input_cost_per_token is not None:
        return tokens_in * spec.input_cost_per_token + tokens_out * (spec.output_cost_per_token or 0.0)
    return float(response._hidden_params.get("response_cost") or 0.0)


def count_tokens(model: str, text: str) -> int:
    """Tokens of ``text`` for ``model`` (litellm's tokenizer; works offline)."""
    import litellm

    return int(litellm.token_counter(model=model, text=text))
