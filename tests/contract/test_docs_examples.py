"""The README's and docs' examples are checked against the code, so they cannot rot: every
``agentos …`` command line in a bash block names a real command and only options it has; the
model registry example loads as a registry; the Python examples run."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import typer
import yaml
from agentos_cli.main import app
from agentos_kernel.llm import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[Path, str]]:
    return [
        (path, m.group(2))
        for path in DOCS
        if path.exists()
        for m in BLOCK.finditer(path.read_text())
        if m.group(1) == kind
    ]


def command_lines() -> list[tuple[Path, str]]:
    """(file, command) for each `agentos …` line of a bash block; `a | b | c` alternatives are
    each a command (``b`` under the group ``a`` names, if ``a`` is a group; ``--x`` an option of
    the first alternative's command)."""
    out = []
    for path, text in blocks("bash"):
        for raw in text.splitlines():
            line = raw.split("  #", 1)[0].strip()
            if "agentos " not in line:
                continue
            line = line[line.index("agentos ") :].split("&&")[0]
            pieces = [p.strip() for p in line.removeprefix("agentos ").split(" | ")]
            group = pieces[0].split()[0]
            head = " ".join(w for w in pieces[0].split() if not w.startswith(("-", "<", "[")))
            for i, piece in enumerate(pieces):
                if i and piece.startswith("-"):  # `halt --agent a | --goal g`: the same command's options
                    piece = f"{head.split()[0]} {piece}"
                elif i and is_group(group):
                    piece = f"{group} {piece}"
                out.append((path, piece))
    return out


ROOT_COMMAND = typer.main.get_command(app)


def subcommands(command: Any) -> dict[str, Any]:
    """A group's commands (typer builds on its own copy of click: duck-typed)."""
    return dict(getattr(command, "commands", {}))


def is_group(name: str) -> bool:
    return bool(subcommands(subcommands(ROOT_COMMAND).get(name)))


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    command = ROOT_COMMAND
    while words and words[0] in subcommands(command):
        command = subcommands(command)[words.pop(0)]
    return command, words


def test_every_agentos_command_in_the_docs_exists_with_the_options_it_shows() -> None:
    lines = command_lines()
    assert len(lines) > 30, "the README's tour was read"
    wrong = []
    for path, line in lines:
        words = shlex.split(line.replace("…", "x").replace("<", "").replace(">", ""), posix=True)
        command, rest = resolve(words)
        if command is ROOT_COMMAND or subcommands(command):
            wrong.append(f"{path.name}: `agentos {line}`: no such command")
            continue
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for word in rest:
            flag = word.split("=", 1)[0].strip("[]")
            if flag.startswith("--") and flag not in options:
                wrong.append(f"{path.name}: `agentos {line}`: {command.name} has no option {flag}")
    assert not wrong, "\n".join(wrong)


def test_the_model_registry_example_loads() -> None:
    examples = [text for _, text in blocks("yaml") if "models:" in text and "alias" in text]
    assert examples, "the README shows a model registry"
    for text in examples:
        registry = ModelRegistry.model_validate(yaml.safe_load(text))
        assert registry.aliases() == ["fast", "smart", "backup"]


def test_the_python_examples_run() -> None:
    examples = [text for _, text in blocks("python")]
    assert examples
    preamble = (
        "from typing import Annotated\n"
        "from agentos_schemas.events import EventData\n"
        "from agentos_schemas.personal import DATA_SUBJECT, PERSONAL\n"
    )
    for text in examples:
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(preamble + text.replace("class ", "class Example", 1), "<docs>", "exec"), namespace)


def test_the_readme_layout_names_every_folder() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") : text.index("## Developing")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = sorted({line.split("/", 1)[0] for line in tracked.splitlines() if "/" in line} - {".ci"})
    services = [p.name for p in (ROOT / "services").iterdir() if (p / "src").is_dir()]
    missing = [f"{f}/" for f in [*folders, *services] if f"{f}/" not in layout]
    assert not missing, f"the README's layout block does not name {missing}"


def test_the_connector_examples_load() -> None:
    from agentos_specialist.connectors.spec import parse_connector

    examples = [(path, text) for path, text in blocks("yaml") if "stdio:" in text or "http:" in text]
    assert any(path.name == "README.md" for path, _ in examples), "the README shows a connector file"
    for path, text in examples:
        if "name:" in text and "tools:" in text:
            assert parse_connector(text, str(path)).tools, path
