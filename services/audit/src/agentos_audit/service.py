"""The audit service: projects every event of ``AGENTOS_EVENTS`` (``agentos.>``, durable consumer
``audit``) into the Postgres schema ``audit``, chains it into a Merkle tree, signs checkpoints
of the tree and publishes them into the log and to the witness (:mod:`agentos_audit.publish`).

It also answers the analysts' questions over request/reply (:mod:`agentos_audit.rpc`):
``agentosrpc.audit.query`` and ``agentosrpc.audit.trace`` (queue group ``audit``), which the
gateway's ``GET /audit/…`` asks. Everything else — verify, rebuild, export — runs from the CLI
(``agentos audit …``) against the projection and the log.
"""

from __future__ import annotations

from agentos_kernel import ConfigError
from agentos_kernel.service import ServiceContext, run_service
from agentos_kernel.settings import KernelSettings
from agentos_schemas.subjects import EVENTS_SUBJECTS

from agentos_audit import rpc
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.publish import Publisher
from agentos_audit.settings import AuditSettings
from agentos_audit.signing import load_or_create, write_vkey

NAME = "audit"
DURABLE = "audit"
FILTERS = list(EVENTS_SUBJECTS)


async def setup(ctx: ServiceContext) -> None:
    """Migrate the schema, load (or create) the signing key, start the projector, answer queries."""
    if ctx.pool is None:
        raise ConfigError("the audit service needs a database: start it with database=True")
    audit = AuditSettings()
    await ensure_schema(ctx.pool, audit.schema_name)
    key_file = audit.key_path(ctx.settings.state_dir)
    signer = load_or_create(key_file)
    ctx.status["audit_key_id"] = signer.key_id
    ctx.status["audit_vkey"] = write_vkey(key_file, audit.origin, signer.public)
    publisher = Publisher(
        ctx.bus,
        audit.schema_name,
        audit.origin,
        witness_file=audit.witness_file,
        witness_url=audit.witness_url,
        status=ctx.status,
    )
    projector = Projector(
        ctx.bus,
        ctx.pool,
        schema=audit.schema_name,
        durable=DURABLE,
        signer=signer,
        batch=audit.batch,
        checkpoint_every=audit.checkpoint_every,
        checkpoint_idle_s=audit.checkpoint_idle_s,
        checkpoint_interval_s=audit.checkpoint_interval_s,
        batch_wait_s=audit.batch_wait_s,
        status=ctx.status,
        publisher=publisher,
    )
    await projector.start()
    ctx.consumers.append(projector.dlq)  # reports `audit` and its dead-letter count in the health record
    ctx.closers.append(projector.stop)
    for sub in await rpc.serve(ctx.bus, ctx.pool, audit.schema_name):
        ctx.closers.append(sub.unsubscribe)


async def main(settings: KernelSettings) -> None:
    """Run the audit service until SIGTERM/SIGINT."""
    # The projection keeps the log's bytes exactly (they were redacted on publish): the hash
    # chain is over them.
    await run_service(NAME, setup, settings, database=True, verbatim_json=True)


__all__ = ["DURABLE", "FILTERS", "NAME", "main", "setup"]
