"""A model provider outage pauses the work instead of spending it: when every model in the chain
fails because the provider is not available (unreachable, timed out, 429, 502–504), the task ends ``unavailable``, which
the orchestrator retries with backoff without counting an attempt; a request the provider refuses
(400) or fails on (500) still fails the attempt. Real litellm calls over real HTTP to local servers standing in for
a provider (a closed port, one answering 503, one 400, one 500)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agentos_kernel import Bus
from agentos_kernel.llm import LLM, ModelCallFailed, ModelRegistry, ModelSpec
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import unique
from agentos_specialist.runner import Progress, run_agent
from agentos_specialist.tools import ToolContext

from tests.policy.conftest import charter, context_event, no_snapshot


def answering(status: int, after_s: float = 0.0) -> ThreadingHTTPServer:
    """An OpenAI-compatible endpoint that answers every request with ``status`` and an error body
    (after ``after_s``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            time.sleep(after_s)
            body = json.dumps(
                {"error": {"message": f"status {status} from the stand-in", "type": "server_error", "code": status}}
            ).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, str]]:
    """name -> api_base: ``down`` (nothing listens), ``overloaded`` (503), ``refusing`` (400),
    ``failing`` (500: the provider failed on the request, an attempt spent), ``slow`` (answers
    after the call's 1 s timeout)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # released again: nothing listens there
    servers = {
        "overloaded": answering(503),
        "refusing": answering(400),
        "failing": answering(500),
        "slow": answering(200, after_s=3.0),
    }
    try:
        yield {
            "down": f"http://127.0.0.1:{closed}/v1",
            **{k: f"http://127.0.0.1:{v.server_address[1]}/v1" for k, v in servers.items()},
        }
    finally:
        for server in servers.values():
            server.shutdown()


def llm_for(providers: dict[str, str], *names: str) -> LLM:
    """An LLM whose chain ``fast`` (then fallbacks) points at the named stand-ins, in order."""
    aliases = ["fast", *(f"fallback{i}" for i in range(1, len(names)))]
    return LLM(
        ModelRegistry(
            models=tuple(
                ModelSpec(alias=alias, model=f"openai/offline-{name}", api_base=providers[name], timeout_s=1.0)
                for alias, name in zip(aliases, names, strict=True)
            )
        )
    )


@pytest.mark.parametrize(
    ("chain", "transient"),
    [
        (("down",), True),
        (("overloaded",), True),
        (("slow",), True),
        (("down", "overloaded"), True),
        (("refusing",), False),
        (("down", "refusing"), False),
        (("failing",), False),
    ],
)
async def test_a_failed_chain_says_whether_the_providers_were_only_unavailable(
    providers: dict[str, str], chain: tuple[str, ...], transient: bool
) -> None:
    llm = llm_for(providers, *chain)
    aliases = ["fast", *(f"fallback{i}" for i in range(1, len(chain)))]
    with pytest.raises(ModelCallFailed) as failed:
        await llm.complete(aliases, [{"role": "user", "content": "hello"}])
    assert failed.value.transient is transient, [c.error for c in failed.value.calls]
    assert [c.ok for c in failed.value.calls] == [False] * len(chain)


@pytest.mark.parametrize(
    ("provider", "code", "retryable"),
    [("down", "unavailable", True), ("overloaded", "unavailable", True), ("refusing", "model_unavailable", True)],
)
async def test_the_task_ends_unavailable_only_when_the_provider_is(
    bus: Bus,
    tenant: str,
    policy_service: ServiceContext,
    providers: dict[str, str],
    provider: str,
    code: str,
    retryable: bool,
) -> None:
    event = context_event(bus, tenant, "research", unique("g"), unique("task"))
    outcome = await run_agent(
        llm_for(providers, provider),
        charter("research"),
        Progress(messages=list(event.data.messages)),
        {},
        ToolContext(bus, event),
        no_snapshot,
    )
    assert (outcome.ok, outcome.code, outcome.retryable) == (False, code, retryable), outcome.reason
    if code == "unavailable":
        assert outcome.reason.startswith("model provider unavailable")
