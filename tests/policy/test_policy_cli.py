"""`agentos policy test` runs the cases shipped next to a policy; `agentos policy simulate` replays
recorded decisions against another version and lists every one that would change."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import eventually
from agentos_policy.model import default_policy_dir
from agentos_schemas.events.policy import PolicyDecided

from tests.policy.conftest import STRICT, ask, logged
from tests.policy.test_approvals import cli


async def test_shipped_policy_passes_its_cases(settings: KernelSettings) -> None:
    result = await cli(settings, "policy", "test")
    assert result.exit_code == 0, result.output
    assert "PASS a tool off the allowlist is denied whatever the model asks" in result.output
    assert "policy default-2026.1: 19 passed, 0 failed" in result.output


async def test_a_failing_case_is_reported_and_exits_1(settings: KernelSettings, tmp_path: Path) -> None:
    shutil.copytree(default_policy_dir(), tmp_path, dirs_exist_ok=True)
    suite = yaml.safe_load((tmp_path / "tests.yaml").read_text())
    suite["cases"][0]["expect"] = "deny"
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite))
    result = await cli(settings, "policy", "test", "--policy-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "FAIL research may search the library: expected deny, got allow/ok" in result.output
    assert "18 passed, 1 failed" in result.output


async def test_simulate_lists_the_decisions_that_would_change(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tenant: str, tmp_path: Path
) -> None:
    asks = [
        ("support", "tool_call", "lookup_customer", {"tool": "lookup_customer"}),
        ("finance", "tool_call", "delete_record", {"tool": "delete_record", "call_id": "c1"}),
        ("keeper", "memory_write", "memory:episodic", {"tool": "propose_memory"}),
        ("cheap-only", "model_call", "fast", {}),
    ]
    for agent, action, resource, extra in asks:
        await ask(bus, tenant, agent, action, resource, goal_id="g", task_id="t", **extra)

    async def recorded() -> bool:
        return len(await logged(bus, tenant, PolicyDecided)) == len(asks)

    await eventually(recorded, timeout=10)
    candidate = yaml.safe_load((STRICT / "policy.yaml").read_text())
    candidate["version"] = "test-2"
    candidate["agents"]["support"]["tools"] = ["send_email"]  # support loses the CRM
    candidate["tools"]["delete_record"]["risk"] = "low"  # deleting records no longer needs a human
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(candidate))
    result = await cli(
        settings, "policy", "simulate", "--since", "10m", "--policy-dir", str(tmp_path), "--tenant", tenant
    )
    assert result.exit_code == 0, result.output
    assert "policy test-2: 4 recorded decisions replayed, 2 would change" in result.output
    rows = [line for line in result.output.splitlines() if tenant in line]
    assert len(rows) == 2
    assert "lookup_customer" in rows[0] and "allow (ok)" in rows[0] and "deny (not_allowed)" in rows[0]
    assert "delete_record" in rows[1] and "require_approval" in rows[1] and "allow (ok)" in rows[1]
    same = await cli(settings, "policy", "simulate", "--since", "10m", "--policy-dir", str(STRICT), "--tenant", tenant)
    assert "4 recorded decisions replayed, 0 would change" in same.output
