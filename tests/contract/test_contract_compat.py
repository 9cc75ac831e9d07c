"""A schema change that events already in the log would not survive is refused unless the event
type's version is bumped: removing a field, making one required, narrowing a type, an enum or a
constant. Adding optional fields and widening are compatible. Checked on the real generated
contracts, and through `agentos contracts` writing over a folder that holds older ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from agentos_cli import contracts
from agentos_cli.contract_compat import breaking

FAILED = "events/dev.agentos.task.failed.v1.json"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return contracts.render()


def schema(rendered: dict[str, str]) -> dict[str, Any]:
    return json.loads(rendered[FAILED])


def data(s: dict[str, Any]) -> dict[str, Any]:
    return s["properties"]["data"]


def test_the_generated_contracts_are_compatible_with_themselves(rendered: dict[str, str]) -> None:
    for rel, text in rendered.items():
        if rel.startswith("events/dev."):
            assert breaking(json.loads(text), json.loads(text)) == [], rel


def test_changes_that_stored_events_would_not_survive_are_named(rendered: dict[str, str]) -> None:
    old = schema(rendered)

    removed = copy.deepcopy(old)
    del data(removed)["properties"]["reason"]
    assert breaking(old, removed) == ["data.reason: removed"]

    required = copy.deepcopy(old)
    data(required)["required"] = [*data(required).get("required", []), "retryable"]
    assert breaking(old, required) == ["data.retryable: now required (events stored without it)"]

    narrowed_enum = copy.deepcopy(old)
    data(narrowed_enum)["properties"]["code"]["enum"].remove("model_unavailable")
    assert breaking(old, narrowed_enum) == ["data.code: no longer accepts the values 'model_unavailable'"]

    retyped = copy.deepcopy(old)
    data(retyped)["properties"]["reason"] = {"type": "integer"}
    assert breaking(old, retyped) == ["data.reason: no longer accepts string"]

    nested = copy.deepcopy(old)  # inside a $def reached through an array of references
    del nested["$defs"]["ModelCall"]["properties"]["cost_usd"]
    assert breaking(old, nested) == ["data.usage.calls[].cost_usd: removed"]


def test_compatible_changes_pass(rendered: dict[str, str]) -> None:
    old = schema(rendered)
    grown = copy.deepcopy(old)
    data(grown)["properties"]["note"] = {"type": "string", "default": ""}  # a new optional field
    data(grown)["properties"]["code"]["enum"].append("new_code")  # a wider enum
    data(grown)["properties"]["reason"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}  # wider type
    data(grown)["properties"]["retryable"] = {"type": "boolean"}
    assert breaking(old, grown) == []


def test_agentos_contracts_refuses_to_write_a_breaking_change(tmp_path: Path, rendered: dict[str, str]) -> None:
    contracts.write(tmp_path)
    stored = json.loads((tmp_path / FAILED).read_text())
    data(stored)["properties"]["legacy_field"] = {"type": "string"}  # a field the code no longer has
    (tmp_path / FAILED).write_text(json.dumps(stored))
    (tmp_path / "events/dev.agentos.task.gone.v1.json").write_text(json.dumps({"title": "dev.agentos.task.gone.v1"}))
    with pytest.raises(contracts.ContractBreak) as refused:
        contracts.write(tmp_path)
    assert refused.value.problems == [
        "dev.agentos.task.failed.v1 data.legacy_field: removed",
        "dev.agentos.task.gone.v1: removed from the catalogue with no newer version",
    ]
    assert "legacy_field" in (tmp_path / FAILED).read_text(), "nothing was written"
    (tmp_path / "events/dev.agentos.task.gone.v1.json").unlink()
    (tmp_path / FAILED).write_text(rendered[FAILED])
    assert contracts.write(tmp_path), "a compatible folder is written"


def test_the_command_says_what_breaks_and_exits_1(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def agentos_contracts() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentos_cli", "contracts", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300"},
        )

    assert agentos_contracts().returncode == 0
    stored = json.loads((tmp_path / FAILED).read_text())
    data(stored)["properties"]["code"]["enum"].append("retired_code")
    (tmp_path / FAILED).write_text(json.dumps(stored))
    refused = agentos_contracts()
    assert refused.returncode == 1
    assert "data.code: no longer accepts the values 'retired_code'" in refused.stderr
    assert "new version of the event type" in refused.stderr
