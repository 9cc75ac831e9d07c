"""The style budget's enforcers: ruff with the rules in pyproject.toml (complexity ≤ 15 included),
`ruff format` (the whole tree is formatted by it), pyright, and the size budget for functions and
modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_pyright_finds_nothing() -> None:
    """Types: standard over every package, strict where pyproject.toml's [tool.pyright] says."""
    pyright = Path(sys.executable).parent / "pyright"
    result = subprocess.run(  # -p: this project's config only, never one found in a parent folder
        [str(pyright), "-p", str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 errors" in result.stdout


def test_the_tree_is_formatted() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout[-4000:] + result.stderr[-2000:]


# The budget in the style guide: functions ≤ 40 lines; modules about 300 lines, 400 at most.
MAX_FUNCTION_LINES = 40
MAX_MODULE_LINES = 400
SOURCES = [*sorted((ROOT / "services").glob("*/src/**/*.py")), *sorted((ROOT / "schemas").glob("src/**/*.py"))]


def test_functions_and_modules_stay_within_the_size_budget() -> None:
    over: list[str] = []
    for path in SOURCES:
        text = path.read_text()
        where = path.relative_to(ROOT)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            over.append(f"{where}: {lines} lines (module budget {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    over.append(f"{where}:{node.lineno} {node.name}: {size} lines (budget {MAX_FUNCTION_LINES})")
    assert len(SOURCES) > 100
    assert not over, "\n".join(over)


def test_the_pre_commit_hooks_name_tools_the_project_installs() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for repo in config["repos"] for h in repo["hooks"]]
    assert {h["id"] for h in hooks} >= {"ruff", "ruff-format", "pyright", "import-linter", "contracts"}
    bin_dir = Path(sys.executable).parent
    missing = [h["entry"] for h in hooks if not (bin_dir / Path(h["entry"].split()[0]).name).exists()]
    assert not missing, f"hooks whose tool is not installed by `pip install -e .[test]`: {missing}"
