"""The settings reference (``docs/settings.md``), generated from the code so that it cannot rot.

Every ``AGENTOS_*`` variable is either a field of a pydantic-settings model (its name, type,
default and attribute docstring are read from the model) or one of the few read straight from the
environment, declared in :data:`ENVIRONMENT` with what reads it. ``tests/contract`` regenerates the
file and fails on drift, and checks that every variable the source reads is in it.

    python -m agentos_cli.settings_doc [--check]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

#: (section title, "module:Class", who reads it), in reading order. A model that extends another
#: listed before it shows only its own fields.
MODELS = (
    ("Kernel: every service and the CLI", "agentos_kernel.settings:KernelSettings", "every process"),
    ("Policy client: every caller of the policy", "agentos_kernel.policy:PolicyClientSettings", "every process"),
    ("Orchestrator", "agentos_orchestrator.settings:OrchestratorSettings", "the orchestrator"),
    ("Specialist", "agentos_specialist.service:SpecialistSettings", "the specialist"),
    ("Policy service", "agentos_policy.service:PolicySettings", "the policy service"),
    ("Memory", "agentos_memory.settings:MemorySettings", "the memory service"),
    ("Audit", "agentos_audit.settings:AuditSettings", "the audit service and `agentos audit`"),
    ("Gateway", "agentos_gateway.settings:GatewaySettings", "the gateway"),
)

#: Variables read from the environment directly (not through a settings model): name -> (reader, meaning).
ENVIRONMENT = {
    "AGENTOS_MODELS": (
        "every service calling models (`agentos_kernel.llm`)",
        "Path of the model registry YAML (aliases for any litellm model string); unset: the "
        "offline model at `AGENTOS_OFFLINE_MODEL_URL`.",
    ),
    "AGENTOS_OFFLINE_MODEL_URL": (
        "every service calling models; set by `agentos up`",
        "Base URL of the shipped offline model's OpenAI-compatible API.",
    ),
    "AGENTOS_OFFLINE_SCENARIO": (
        "`agentos up` / `demo`, `agentos audit replay`",
        "Scenario file the offline model answers from (default: the shipped demo).",
    ),
    "AGENTOS_ALLOW_LLM_CALLS": (
        "`agentos_kernel.llm`",
        "`0` refuses every model call to a non-loopback address (tests, sandboxes).",
    ),
    "AGENTOS_LOG_LEVEL": ("every service", "Python logging level (default `INFO`)."),
    "AGENTOS_OUTBOX_DIR": (
        "the specialist's `send_email` tool",
        "Folder the outbox writes messages to (default `<state dir>/outbox`).",
    ),
    "AGENTOS_SECRETS_DIR": (
        "`agentos_kernel.secrets`",
        "Secret store folder, a file per secret (default `<state dir>/secrets`).",
    ),
    "AGENTOS_GATEWAY_URL": ("`agentos send`, `agentos mcp`", "The gateway to call (default: the running gateway's)."),
    "AGENTOS_GATEWAY_KEY": ("`agentos send`, `agentos mcp`", "API key sent to the gateway."),
    "AGENTOS_SUPERVISOR_PID": (
        "every service; set by `agentos up` and the gateway's first process",
        "A service stops itself once this process is gone (no orphans after a kill).",
    ),
    "AGENTOS_TEST_NATS_URL": ("the test suite", "Use this NATS instead of starting an embedded one."),
    "AGENTOS_TEST_DATABASE_URL": ("the test suite", "Use this Postgres instead of starting an embedded one."),
    "AGENTOS_TEST_LONG": ("the test suite", "`1` runs the long variants of the torture and scale tests."),
    "AGENTOS_CRASH_POINT": (
        "fault tests",
        "Arm a crash point (`agentos_kernel.crashpoints`): the process SIGKILLs itself there. Tests only.",
    ),
    "AGENTOS_CRASH_ONCE": (
        "fault tests",
        "A file: the armed crash point fires only while it does not exist (then creates it).",
    ),
    "AGENTOS_TEST_MCP_INSPECTOR": (
        "the test suite",
        "The MCP Inspector's `mcp-inspector` (npm) to drive `agentos mcp` with (default: on `PATH`; else skipped).",
    ),
}

DOC = Path("docs") / "settings.md"
"""Where the reference lives, from the repository's root (where the command is run)."""


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    for noise in ("agentos_gateway.settings.", "pydantic.types."):
        text = text.replace(noise, "")
    return text


def _default(field: Any) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, Path) and value.is_absolute():  # a folder shipped inside a package
        shipped = next((p for p in value.parents if p.name.startswith("agentos_")), None)
        return f"`{value.relative_to(shipped.parent)}` (shipped)" if shipped else f"`{value.name}`"
    if value in ((), {}, None):
        return "—" if value is None else f"`{value!r}`"
    return f"`{value}`" if not isinstance(value, str) else f'`"{value}"`'


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def variables(model: Any, inherited: set[str]) -> list[tuple[str, str, str, str]]:
    """(variable, type, default, meaning) of each field ``model`` has beyond ``inherited``."""
    prefix = model.model_config.get("env_prefix", "")
    rows = []
    for name, field in model.model_fields.items():
        if name in inherited:
            continue
        rows.append((f"{prefix}{name}".upper(), _type(field.annotation), _default(field), field.description or ""))
    return rows


def render() -> str:
    out = [
        "# Settings reference",
        "",
        "Generated from the settings models by `python -m agentos_cli.settings_doc` (do not edit by hand; a",
        "test fails when it differs from the code). Every setting is an environment variable; pydantic",
        "parses it (`true`/`false`, numbers, JSON for lists and maps). The gateway also reads any of its",
        "settings from the YAML file named by `AGENTOS_GATEWAY_CONFIG`.",
        "",
    ]
    seen: dict[Any, set[str]] = {}
    for title, path, reader in MODELS:
        model = _load(path)
        inherited = next((fields for base, fields in seen.items() if issubclass(model, base)), set())
        seen[model] = set(model.model_fields)
        out += [f"## {title}", "", f"`{path.replace(':', '.')}`, read by {reader}.", ""]
        out += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{v}` | `{_cell(t)}` | {d} | {_cell(m)} |" for v, t, d, m in variables(model, inherited)]
        out.append("")
    out += ["## Read from the environment directly", "", "| variable | read by | meaning |", "|---|---|---|"]
    out += [f"| `{name}` | {_cell(reader)} | {_cell(meaning)} |" for name, (reader, meaning) in ENVIRONMENT.items()]
    return "\n".join(out) + "\n"


def documented() -> set[str]:
    """Every variable the reference names."""
    names = set(ENVIRONMENT)
    seen: set[str] = set()
    for _, path, _ in MODELS:
        names |= {v for v, *_ in variables(_load(path), seen)}
    return names


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run `python -m agentos_cli.settings_doc`", file=sys.stderr)
            return 1
        print(f"{DOC} matches the code")
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
