"""One error tree, reported the same way everywhere: each class says its code, HTTP status, exit
code and retryability; errors from outside the tree are placed (the schemas' and pydantic's
validation errors are input, anything else internal); the CLI exits with the class's code; the
gateway answers the class's problem document (with Retry-After when known)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.control import Halt, Halted
from agentos_kernel.exceptions import (
    AgentOSError,
    BusUnavailable,
    ConfigError,
    Failed,
    InvalidInput,
    Refused,
    Unavailable,
    describe,
)
from agentos_kernel.llm import ModelCallFailed
from agentos_kernel.nats_connection import PermissionDenied
from agentos_kernel.records import RecordConflict
from agentos_schemas.charter import Charter
from agentos_schemas.codec import DecodeError
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConfigError("AGENTOS_X is bad"), ("config", 500, 2, False)),
        (InvalidInput("no such goal"), ("invalid_input", 422, 2, False)),
        (Refused("denied"), ("refused", 403, 3, False)),
        (Halted(Halt(scope="agent", target="a", reason="r")), ("halted", 403, 3, False)),
        (Unavailable("policy store (Postgres)"), ("unavailable", 503, 75, True)),
        (BusUnavailable("no ack"), ("bus_unavailable", 503, 75, True)),
        (Failed("every attempt used"), ("failed", 500, 1, False)),
        (RecordConflict("k", 1, None), ("conflict", 409, 1, False)),
        (PermissionDenied("publish to x"), ("permission_denied", 500, 2, False)),
        (ModelCallFailed("every model failed", [], transient=True), ("model_unavailable", 500, 1, True)),
        (ModelCallFailed("every model failed", [], transient=False), ("model_unavailable", 500, 1, False)),
        (AgentOSError("something"), ("error", 500, 2, False)),
        (DecodeError("not_json", "bad bytes"), ("invalid_input", 422, 2, False)),
        (KeyError("bug"), ("internal_error", 500, 1, False)),
    ],
)
def test_every_error_says_how_it_is_reported(error: BaseException, expected: tuple[str, int, int, bool]) -> None:
    told = describe(error)
    assert (told.code, told.http_status, told.exit_code, told.retryable) == expected


def test_pydantic_validation_is_input_and_retry_information_is_data() -> None:
    with pytest.raises(ValidationError) as invalid:
        Charter.model_validate({"name": "x"})
    assert describe(invalid.value).code == "invalid_input"
    assert describe(Unavailable("the model provider", retry_after_s=7.5)).retry_after_s == 7.5
    assert describe(BusUnavailable("x")).retry_after_s == 1.0
    assert describe(Unavailable("x")).retry_after_s is None


async def agentos(*args: str, **env: str) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        *args,
        env={**base, "AGENTOS_STATE_DIR": "/nonexistent", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, err.decode()


async def test_the_cli_exits_with_the_code_of_the_error_class(settings: KernelSettings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    code, err = await agentos("approvals", AGENTOS_NATS_URL=f"nats://127.0.0.1:{closed}")
    assert code == 75, err  # NATS unreachable: try again later
    code, err = await agentos("approvals", AGENTOS_NATS_URL=settings.nats_url or "", AGENTOS_POLICY_TIMEOUT_S="1")
    assert code == 75 and "the policy service unavailable" in err, err  # no policy service answers
    code, err = await agentos("halt", "--agent", "a", "--tenant", "t", AGENTOS_NATS_URL=settings.nats_url or "")
    assert code == 2 and "name exactly one of" in err, err  # usage
    code, err = await agentos("status")
    assert code == 2 and "no AgentOS is running here" in err, err  # nothing configured


async def test_the_gateway_answers_the_problem_of_the_error_class(bus: Bus, tenant: str) -> None:
    import httpx
    from agentos_gateway.app import build_app
    from agentos_gateway.gateway import Gateway
    from agentos_gateway.server import GatewayServer
    from agentos_gateway.settings import GatewaySettings

    gw = await Gateway(bus, GatewaySettings()).start()
    app = build_app(gw)
    raised = {
        "unavailable": Unavailable("the ledger", "restarting", retry_after_s=2.5),
        "refused": Refused("over budget"),
        "input": InvalidInput("no such thing"),
        "bug": KeyError("x"),
    }

    @app.get("/test-raise/{what}")
    async def raise_it(what: str) -> None:
        raise raised[what]

    server = await GatewayServer(app).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answers = {what: await http.get(f"/test-raise/{what}") for what in raised}
    finally:
        await server.stop()
    got = {w: (r.status_code, r.json()["code"], r.headers.get("retry-after")) for w, r in answers.items()}
    assert got == {
        "unavailable": (503, "unavailable", "3"),
        "refused": (403, "refused", None),
        "input": (422, "invalid_input", None),
        "bug": (500, "internal_error", None),
    }
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers.values())
    assert answers["unavailable"].json()["detail"] == "the ledger unavailable (restarting)"
