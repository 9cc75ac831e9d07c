"""What the governance commands show: the policy in force, simulation changes, budgets, approvals."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentos_cli import output

if TYPE_CHECKING:
    from agentos_kernel import Bus
    from agentos_policy.simulate import Report
    from agentos_schemas.rpc import ApprovalListReply, BudgetReport
    from rich.console import Console


async def reported_policies(bus: Bus) -> list[dict[str, Any]]:
    """The health reports of the running policy service's instances (each names its policy). Reports
    that cannot be read are an error: taken for "none reporting", they would name the wrong policy."""
    import nats.errors
    import nats.js.errors
    from agentos_kernel import BusUnavailable
    from agentos_schemas import subjects

    found = []
    try:
        kv = await bus.js.key_value(subjects.HEALTH_BUCKET)
        for key in [k for k in await kv.keys() if k.startswith("policy.")]:
            # a key gone since it was listed (expired, or its instance stopped) reports nothing
            with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                entry = await kv.get(key)
                report = json.loads(entry.value or b"{}")
                if report.get("policy_dir"):
                    found.append(report)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return []  # no service has reported
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        raise BusUnavailable(
            f"the policy service's health reports could not be read ({type(exc).__name__}: {exc}): "
            "name the policy with --policy-dir"
        ) from None
    return found


async def in_force(bus: Bus) -> tuple[Path, str]:
    """The folder of the policy in force and how it was found: from the running policy service;
    with none running, the one it would load (``AGENTOS_POLICY_DIR`` or the shipped default)."""
    from agentos_kernel import AgentOSError
    from agentos_policy.model import default_policy_dir

    reports = await reported_policies(bus)
    folders = {(r["policy_dir"], r.get("policy_version", "?")) for r in reports}
    if len(folders) > 1:
        listed = "; ".join(f"{v} at {d}" for d, v in sorted(folders))
        raise AgentOSError(
            f"the policy service's instances enforce different policies ({listed}): name one with --policy-dir"
        )
    if folders:
        folder, version = folders.pop()
        if not Path(folder).is_dir():
            raise AgentOSError(
                f"the policy in force is version {version} in {folder} on the policy service's "
                "host, which this machine cannot read: pass --policy-dir"
            )
        return Path(folder), f"the policy in force: version {version}, reported by the running policy service"
    if os.environ.get("AGENTOS_POLICY_DIR"):
        return Path(os.environ["AGENTOS_POLICY_DIR"]), (
            "no policy service is reporting; this is the policy it would load, from AGENTOS_POLICY_DIR"
        )
    return default_policy_dir(), "no policy service is reporting; this is the policy it would load, the shipped one"


def simulate_report(out: Console, version: str, report: Report) -> None:
    changes = report.changes or []
    rows = [
        {
            "time": c.at.strftime("%Y-%m-%d %H:%M:%S"),
            "decision": c.decision_id,
            "tenant": c.tenant,
            "agent": c.agent,
            "action": c.action,
            "on": c.resource,
            "recorded": c.before,
            "would be": c.after,
            "why": "; ".join(c.reasons),
        }
        for c in changes
    ]
    if rows:
        output.show(out, output.table(output.Section("", rows)))
    since_ledger = report.ledger_from.strftime("%Y-%m-%d") if report.ledger_from else "-"
    out.print(
        f"policy {version}: {report.read} recorded decisions replayed, {len(changes)} would "
        f"change ({report.budget_changes} on budgets; balances rebuilt from the log since "
        f"{since_ledger})",
        highlight=False,
    )


def budget_section(report: BudgetReport) -> output.Section:
    """Money with every digit it has (``agentos_schemas.money.usd``): a $0.005 cap is 0.005."""
    from agentos_schemas.money import usd

    rows = [
        {
            "tenant": ln.tenant,
            "scope": ln.scope,
            "name": ln.name,
            "period": ln.period_key,
            "spent $": usd(ln.used_usd, symbol=False),
            "reserved $": usd(ln.reserved_usd, symbol=False),
            "cap $": "-" if ln.cap_usd is None else usd(ln.cap_usd, symbol=False),
            "tokens": ln.used_tokens + ln.reserved_tokens,
            "cap tokens": "-" if ln.cap_tokens is None else ln.cap_tokens,
        }
        for ln in report.lines
    ]
    return output.Section(
        "Budgets",
        rows,
        columns=("tenant", "scope", "name", "period", "spent $", "reserved $", "cap $", "tokens", "cap tokens"),
    )


def approvals_section(reply: ApprovalListReply) -> output.Section:
    rows = [
        {
            "id": a.approval_id,
            "tenant": a.tenant,
            "risk": a.risk,
            "votes": f"{len(a.approved_by)}/{a.needed}",
            "role": a.approver_role,
            "agent": a.agent,
            "task": a.task_id,
            "what": a.summary,
            "expires": a.expires_at.strftime("%H:%M:%S") if a.expires_at else "",
        }
        for a in reply.approvals
    ]
    return output.Section(
        "Approvals waiting for a human",
        rows,
        columns=("id", "tenant", "risk", "votes", "role", "agent", "task", "what", "expires"),
    )
