"""`agentos audit prove` and `agentos audit checkpoint`: proofs of the audit log's Merkle tree for
an auditor's own verifier (``python -m agentos_verify``), and a signed checkpoint on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from agentos_cli.audit_access import kernel_settings, run_command, schema_name, with_bus_and_pool, with_pool
from agentos_cli.audit_cmd import Schema, app, console, err

if TYPE_CHECKING:
    import asyncpg
    from agentos_kernel import Bus


@app.command()
def prove(
    event_id: Annotated[str | None, typer.Argument(help="The event to prove included")] = None,
    checkpoint: Annotated[
        int | None, typer.Option(help="In the checkpoint of this tree size (default: the latest)")
    ] = None,
    consistency: Annotated[
        tuple[int, int] | None,
        typer.Option(help="OLD NEW: prove the checkpoint of tree size OLD a prefix of the one of NEW"),
    ] = None,
    schema: Schema = None,
) -> None:
    """Print a proof (JSON) that `python -m agentos_verify PROOF --key VKEY` checks: an event's
    inclusion in a signed checkpoint, or the consistency of two checkpoints."""
    import json

    from agentos_audit import prove as p

    if (event_id is None) == (consistency is None):
        err.print("[bold red]agentos: error:[/] give an event id, or --consistency OLD NEW")
        raise typer.Exit(2)
    if consistency is not None:
        old, new = consistency
        doc = run_command(with_pool(lambda pool: p.consistency_proof(pool, schema_name(schema), old, new)))
    else:
        assert event_id is not None
        doc = run_command(with_pool(lambda pool: p.inclusion_proof(pool, schema_name(schema), event_id, checkpoint)))
    print(json.dumps(doc, indent=2))


@app.command("checkpoint")
def checkpoint_cmd(schema: Schema = None) -> None:
    """Sign a checkpoint of the tree now (with the audit key file) and publish it into the log and
    to the witness; prints the signed note."""
    from agentos_audit.prove import checkpoint_now
    from agentos_audit.publish import Publisher
    from agentos_audit.settings import AuditSettings
    from agentos_audit.signing import load_private

    audit = AuditSettings()
    signer = load_private(audit.key_path(kernel_settings().state_dir))
    name = schema_name(schema)

    async def go(bus: Bus, pool: asyncpg.Pool) -> str:
        publisher = Publisher(bus, name, audit.origin, witness_file=audit.witness_file, witness_url=audit.witness_url)
        return await checkpoint_now(bus, pool, name, signer, publisher)

    console.print(run_command(with_bus_and_pool(go)), end="", highlight=False, markup=False)
