"""The settings reference cannot rot: docs/settings.md is what the settings models generate, and
every ``AGENTOS_*`` name in the source is a documented variable or a store listed in the data
inventory (streams and buckets share the prefix); no documented environment variable is stale."""

from __future__ import annotations

import re
from pathlib import Path

from agentos_cli import settings_doc

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("schemas/src/**/*.py")]
NAME = re.compile(r"AGENTOS_[A-Z0-9_]*[A-Z0-9]")
#: Prefixes named in prose ("``AGENTOS_GATEWAY_*``"), not variables.
PREFIXES = {"AGENTOS_AUDIT", "AGENTOS_GATEWAY", "AGENTOS_POLICY"}


def test_the_settings_reference_is_what_the_models_generate() -> None:
    assert (ROOT / settings_doc.DOC).read_text() == settings_doc.render(), (
        "docs/settings.md is out of date: run `python -m agentos_cli.settings_doc`"
    )


def test_every_agentos_name_in_the_source_is_a_documented_variable_or_an_inventoried_store() -> None:
    names = {m for path in SOURCES for m in NAME.findall(path.read_text())}
    inventory = (ROOT / "docs" / "data-inventory.md").read_text()
    unknown = sorted(n for n in names - settings_doc.documented() - PREFIXES if f"`{n}`" not in inventory)
    assert not unknown, f"neither in docs/settings.md nor in docs/data-inventory.md: {unknown}"


def test_no_documented_environment_variable_is_stale() -> None:
    text = "\n".join(p.read_text() for p in [*SOURCES, *ROOT.glob("tests/**/*.py")] if p.name != "settings_doc.py")
    stale = sorted(n for n in settings_doc.ENVIRONMENT if n not in text)
    assert not stale, f"documented but read nowhere: {stale}"
