"""Integrator commands (`agentos send`), registered on the main app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from agentos_cli import output
from agentos_cli.errors import fail

CLOUDEVENT = "cloudevent"


async def discover_gateway() -> str | None:
    """The URL a running gateway reports in its heartbeat (``agentos up``), if any. Heartbeats that
    cannot be read are an error (:class:`~agentos_kernel.BusUnavailable`), not "no gateway"."""
    import nats.errors
    import nats.js.errors
    from agentos_kernel import Bus, BusUnavailable, KernelSettings
    from agentos_kernel.runtime import resolve
    from agentos_schemas import subjects

    settings = resolve(KernelSettings())
    if not settings.nats_url:
        return None
    bus = await Bus.connect(settings, source="cli")
    try:
        kv = await bus.js.key_value(subjects.HEALTH_BUCKET)
        for key in [k for k in await kv.keys() if k.startswith("gateway.")]:
            # a key gone since it was listed (expired, or its gateway stopped) names no gateway
            with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                url = json.loads((await kv.get(key)).value or b"{}").get("url")
                if url:
                    return str(url)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return None  # no gateway running
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        raise BusUnavailable(
            f"the gateway's heartbeat could not be read ({type(exc).__name__}: {exc}): "
            "pass --gateway URL or set AGENTOS_GATEWAY_URL"
        ) from None
    finally:
        await bus.close()
    return None


class NoSource(Exception):
    """The payload's source cannot be inferred: no mapping matches it, or more than one does."""


async def infer_source(client: Any, body: bytes) -> tuple[str, str]:
    """(source, how it was chosen) from the gateway's ``POST /mappings/match``: the one mapping
    whose rule matches the payload, or ``cloudevent`` for a structured CloudEvent or batch."""
    doc = await client.match(body)
    matches, unmatched = doc.get("matches") or [], doc.get("unmatched") or []
    if len(matches) == 1:
        m = matches[0]
        rule = f", rule {m['rule']!r}" if m.get("rule") else ""
        how = f"source {m['source']!r} inferred from the payload (mapping {m['source']!r}{rule}: {m['why']})"
        return m["source"], how
    if matches:
        listed = "; ".join(f"{m['source']} (rule {m['rule']!r})" for m in matches)
        raise NoSource(
            f"the payload matches more than one mapping: {listed}; pass --source with one of "
            f"{', '.join(m['source'] for m in matches)}"
        )
    listed = "; ".join(f"{u['source']}: {u['reason']}" for u in unmatched) or "the gateway has no mappings"
    raise NoSource(
        f"no mapping matches the payload, and it is not a CloudEvent (no specversion); pass --source. "
        f"Candidates: {listed}"
    )


async def post_file(body: bytes, *, source: str | None, dry_run: bool, url: str, key: str | None) -> dict[str, Any]:
    """Send ``body`` through the gateway: CloudEvents to /events, vendor payloads to their mapping.
    Without ``source`` the gateway is asked which mapping matches (and the choice is printed)."""
    from agentos_gateway.client import BATCH, STRUCTURED, GatewayClient

    async with GatewayClient(url, key, retries=2) as client:
        if source is None:
            source, how = await infer_source(client, body)
            output.console(stderr=True).print(escape(how), highlight=False, soft_wrap=True)
        if source == CLOUDEVENT:
            ctype = BATCH if body.lstrip()[:1] == b"[" else STRUCTURED
            path = "/events?dry_run=true" if dry_run else "/events"
            resp = await client.request("POST", path, body, {"content-type": ctype})
            doc: dict[str, Any] = resp.json()
            return doc
        if dry_run:
            return await client.preview(source, body)
        return await client.ingest(source, body)


def gateway_url(gateway: str | None) -> str:
    """``--gateway``, else ``AGENTOS_GATEWAY_URL``, else the URL a running gateway reports; exits 2
    without one (or when the running ones cannot be asked)."""
    from agentos_kernel.exceptions import AgentOSError

    try:
        url = gateway or os.environ.get("AGENTOS_GATEWAY_URL") or asyncio.run(discover_gateway())
    except AgentOSError as exc:  # NATS unreachable, or the heartbeats unreadable: one line, exit 2
        fail(exc)
    if not url:
        output.console(stderr=True).print(
            "[bold red]agentos: error:[/] no gateway: pass --gateway URL, set AGENTOS_GATEWAY_URL,"
            " or start one with `agentos up`"
        )
        raise typer.Exit(2)
    return url


def run_send(body: bytes, *, source: str | None, dry_run: bool, gateway: str | None, key: str | None) -> None:
    """Send and print the gateway's answer; exit 1 on a rejection (with its reasons) or a source that
    cannot be inferred, 2 when unreachable."""
    from agentos_gateway.client import GatewayError, GatewayUnavailable

    out, err = output.console(), output.console(stderr=True)
    url = gateway_url(gateway)
    try:
        result = asyncio.run(
            post_file(
                body,
                source=source.lower() if source else None,
                dry_run=dry_run,
                url=url,
                key=key or os.environ.get("AGENTOS_GATEWAY_KEY"),
            )
        )
    except NoSource as exc:
        fail(exc, 1)
    except GatewayUnavailable as exc:
        fail(exc.problem.get("detail"))
    except GatewayError as exc:  # the gateway's words are printed as they are (a [list] is no markup)
        err.print(
            f"[bold red]rejected ({exc.status} {exc.problem.get('code', '')}):[/] "
            f"{escape(str(exc.problem.get('detail', '')))}",
            highlight=False,
            soft_wrap=True,
        )
        for item in exc.problem.get("errors") or []:
            err.print(f"  - {escape(str(item))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print_json(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add the integrator commands to ``app``."""

    @app.command()
    def send(
        file: Annotated[Path, typer.Argument(help="JSON file to send (`-` for standard input)")],
        source: Annotated[
            str | None,
            typer.Option(help="cloudevent, or a mapping: zendesk, square … (default: inferred from the payload)"),
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show the mapped/validated events; publish nothing")
        ] = False,
        gateway: Annotated[
            str | None, typer.Option(help="Gateway URL (default: AGENTOS_GATEWAY_URL, or the running gateway's)")
        ] = None,
        key: Annotated[str | None, typer.Option(help="API key (default: AGENTOS_GATEWAY_KEY)")] = None,
    ) -> None:
        """Post a CloudEvent (or batch) or a vendor payload file through the gateway.

        Without --source the gateway says which mapping matches the payload (a structured
        CloudEvent is `cloudevent`) and the choice is printed; no match or more than one is an
        error listing the candidates. `--source cloudevent` posts to /events; a mapping name posts
        to /ingest/<source>, or with --dry-run to /mappings/<source>/preview.
        """
        try:
            body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {str(file)!r}: {exc.strerror}")
        run_send(body, source=source, dry_run=dry_run, gateway=gateway, key=key)
