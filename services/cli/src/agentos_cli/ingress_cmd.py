"""Integrator commands (`agentos send`), registered on the main app."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from agentos_cli.errors import fail
from rich.console import Console
from rich.markup import escape

CLOUDEVENT = "cloudevent"


async def discover_gateway() -> str | None:
    """The URL a running gateway reports in its heartbeat (``agentos up``), if any."""
    from agentos_kernel import Bus, KernelSettings
    from agentos_kernel.runtime import resolve
    from agentos_schemas import subjects

    settings = resolve(KernelSettings())
    if not settings.nats_url:
        return None
    bus = await Bus.connect(settings, source="cli")
    try:
        kv = await bus.js.key_value(subjects.HEALTH_BUCKET)
        for key in await kv.keys():
            if key.startswith("gateway."):
                url = json.loads((await kv.get(key)).value or b"{}").get("url")
                if url:
                    return str(url)
    except Exception:  # no bucket, no keys: no gateway running
        return None
    finally:
        await bus.close()
    return None


async def post_file(body: bytes, *, source: str, dry_run: bool, url: str, key: str | None) -> dict[str, Any]:
    """Send ``body`` through the gateway: CloudEvents to /events, vendor payloads to their mapping."""
    from agentos_gateway.client import BATCH, STRUCTURED, GatewayClient

    async with GatewayClient(url, key, retries=2) as client:
        if source == CLOUDEVENT:
            ctype = BATCH if body.lstrip()[:1] == b"[" else STRUCTURED
            path = "/events?dry_run=true" if dry_run else "/events"
            resp = await client.request("POST", path, body, {"content-type": ctype})
            doc: dict[str, Any] = resp.json()
            return doc
        if dry_run:
            return await client.preview(source, body)
        return await client.ingest(source, body)


def run_send(body: bytes, *, source: str, dry_run: bool, gateway: str | None, key: str | None) -> None:
    """Send and print the gateway's answer; exit 1 on a rejection (with its reasons), 2 when unreachable."""
    from agentos_gateway.client import GatewayError, GatewayUnavailable

    out, err = Console(), Console(stderr=True)
    url = gateway or os.environ.get("AGENTOS_GATEWAY_URL") or asyncio.run(discover_gateway())
    if not url:
        err.print("[bold red]agentos: error:[/] no gateway: pass --gateway URL, set AGENTOS_GATEWAY_URL,"
                  " or start one with `agentos up`")
        raise typer.Exit(2)
    try:
        result = asyncio.run(post_file(body, source=source.lower(), dry_run=dry_run, url=url,
                                       key=key or os.environ.get("AGENTOS_GATEWAY_KEY")))
    except GatewayUnavailable as exc:
        fail(exc.problem.get("detail"))
    except GatewayError as exc:  # the gateway's words are printed as they are (a [list] is no markup)
        err.print(f"[bold red]rejected ({exc.status} {exc.problem.get('code', '')}):[/] "
                  f"{escape(str(exc.problem.get('detail', '')))}", highlight=False, soft_wrap=True)
        for item in exc.problem.get("errors") or []:
            err.print(f"  - {escape(str(item))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print_json(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add the integrator commands to ``app``."""

    @app.command()
    def send(
        file: Annotated[Path, typer.Argument(help="JSON file to send (`-` for standard input)")],
        source: Annotated[str, typer.Option(help="cloudevent, or a mapping: zendesk, square …")] = CLOUDEVENT,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Show the mapped/validated events; publish nothing")] = False,
        gateway: Annotated[str | None, typer.Option(
            help="Gateway URL (default: AGENTOS_GATEWAY_URL, or the running gateway's)")] = None,
        key: Annotated[str | None, typer.Option(help="API key (default: AGENTOS_GATEWAY_KEY)")] = None,
    ) -> None:
        """Post a CloudEvent (or batch) or a vendor payload file through the gateway.

        `--source cloudevent` (the default) posts to /events; a mapping name posts to
        /ingest/<source>, or with --dry-run to /mappings/<source>/preview.
        """
        try:
            body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {str(file)!r}: {exc.strerror}")
        run_send(body, source=source, dry_run=dry_run, gateway=gateway, key=key)
