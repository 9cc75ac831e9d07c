"""Pure context assembly (no bus): the prompt's shape, scoping, and the token-budget rule."""

from __future__ import annotations

import json
import re
from typing import Any

from agentos_context_manager.assemble import Assembly, assemble, render_memory
from agentos_context_manager.budget import truncate
from agentos_context_manager.service import count
from agentos_schemas.charter import Charter, MemoryPolicy
from agentos_schemas.events import TaskAssigned
from agentos_schemas.rpc import MemoryEntry

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}


def charter(**overrides: Any) -> Charter:
    fields: dict[str, Any] = {
        "name": "researcher",
        "role": "Finds and checks facts",
        "capabilities": ("research",),
        "model": "offline-fast",
        "tools": ("web_search", "fetch_page"),
        "output_schema": SCHEMA,
        "context_tokens": 100_000,
        "instructions": "Cite every source.",
    }
    return Charter(**{**fields, **overrides})


def task(**overrides: Any) -> TaskAssigned:
    fields: dict[str, Any] = {
        "task_id": "g1/1/s3/1",
        "goal_id": "g1",
        "step_id": "s3",
        "attempt": 1,
        "agent": "researcher",
        "capability": "research",
        "instruction": "Compare the vendors",
        "goal_text": "Pick a CRM vendor",
        "depends_on": ("s1", "s2"),
        "handoff": {"s1": {"vendors": ["a", "b"]}, "s2": {"prices": [1, 2]}},
    }
    return TaskAssigned(**{**fields, **overrides})


def entry(id: str, score: float, kind: str = "semantic", goal: str | None = None) -> MemoryEntry:
    content = f"{id} " + "fact " * 30
    return MemoryEntry(id=id, kind=kind, content=content, score=score, goal_id=goal)


def parts(a: Assembly) -> tuple[str, str]:
    return a.messages[0]["content"], a.messages[1]["content"]


def assert_adds_up(a: Assembly) -> None:
    tokens = a.manifest.tokens
    assert set(tokens) == {"system", "task", "handoff", "memory", "feedback", "total"}
    assert tokens["total"] == sum(v for k, v in tokens.items() if k != "total")
    assert tokens["system"] == count(a.messages[0]["content"])


def test_the_system_prompt_carries_identity_tools_and_the_output_contract() -> None:
    a = assemble(charter(), task(), [], count)
    system, user = parts(a)
    assert re.search(r"^agent: researcher$", system, re.MULTILINE)
    assert "Finds and checks facts" in system and "Cite every source." in system
    assert "web_search, fetch_page" in system
    assert f"Answer with JSON matching this schema: {json.dumps(SCHEMA, separators=(',', ':'))}" in system
    assert "Pick a CRM vendor" in user and "Compare the vendors" in user
    assert '## s1\n{"vendors":["a","b"]}' in user and '## s2\n{"prices":[1,2]}' in user
    assert a.manifest.tools == ("web_search", "fetch_page") and a.manifest.trimmed == ()
    assert a.manifest.charter == "researcher@1" and a.manifest.budget_tokens == 100_000
    assert_adds_up(a)


def test_only_the_dependencies_outputs_are_handed_over() -> None:
    t = task(depends_on=("s1",), handoff={"s1": {"ok": 1}, "s7": {"secret": "other-step"}})
    a = assemble(charter(), t, [], count)
    assert a.manifest.handoff_sources == ("s1",)
    assert "other-step" not in json.dumps(a.messages)


def test_a_review_names_the_step_under_review_and_rejections_carry_feedback() -> None:
    t = task(depends_on=(), handoff={"s2": {"draft": "x"}}, review_of="s2", feedback="Missing prices.")
    a = assemble(charter(), t, [], count)
    _, user = parts(a)
    assert a.manifest.handoff_sources == ("s2",)
    assert "This is a review of step s2; the hand-off contains the output under review." in user
    assert user.endswith("Your previous attempt was rejected: Missing prices. Fix this.")
    assert a.manifest.tokens["feedback"] > 0
    assert_adds_up(a)


def test_memory_is_scoped_to_the_charter_and_the_goal() -> None:
    c = charter(memory=MemoryPolicy(kinds=("working", "episodic"), k=2))
    entries = [
        entry("w-own", 0.9, "working", goal="g1"),
        entry("w-other", 0.99, "working", goal="g2"),
        entry("sem-7", 0.95, "semantic"),
        entry("epi", 0.5, "episodic"),
        entry("epi-low", 0.1, "episodic"),
    ]
    a = assemble(c, task(), entries, count)
    _, user = parts(a)
    assert a.manifest.memory_ids == ("w-own", "epi")
    assert "w-other" not in user and "sem-7" not in user and "[semantic" not in user
    assert "[episodic epi] (finding from an earlier goal) epi" in user and "[working w-own] w-own" in user
    assert a.manifest.trimmed == ("memory: 2 out-of-scope entries ignored", "memory:epi-low")


def test_over_budget_memory_is_dropped_lowest_score_first() -> None:
    entries = [entry("m-mid", 0.5), entry("m-top", 0.9), entry("m-low", 0.1), entry("m-high", 0.7)]
    roomy = assemble(charter(), task(), entries, count).manifest.tokens
    top_two = count(render_memory([entries[1], entries[3]]))
    budget = roomy["total"] - roomy["memory"] + top_two
    a = assemble(charter(context_tokens=budget), task(), entries, count)
    assert a.manifest.memory_ids == ("m-top", "m-high")
    assert a.manifest.trimmed == ("memory:m-low", "memory:m-mid")
    assert a.manifest.tokens["total"] <= budget and a.manifest.handoff_sources == ("s1", "s2")
    assert "m-low" not in parts(a)[1]
    assert_adds_up(a)


def test_then_hand_off_is_truncated_with_a_marker_and_small_items_stay_whole() -> None:
    t = task(handoff={"s1": {"report": "lorem ipsum " * 2000}, "s2": {"prices": [1, 2]}})
    a = assemble(charter(context_tokens=800), t, [entry("m1", 0.9)], count, notes=("memory: note",))
    _, user = parts(a)
    assert a.manifest.trimmed == ("memory: note", "memory:m1", "handoff:s1 truncated")
    assert a.manifest.memory_ids == () and a.manifest.handoff_sources == ("s1", "s2")
    assert re.search(r"…\[truncated \d+ tokens\]", user)
    assert '## s2\n{"prices":[1,2]}' in user
    assert a.manifest.tokens["total"] <= 800
    assert_adds_up(a)


def test_system_task_and_feedback_are_never_dropped() -> None:
    c = charter(context_tokens=256, instructions="Always double-check. " * 200)
    t = task(feedback="Wrong currency", handoff={"s1": {"x": "y " * 500}, "s2": {}})
    a = assemble(c, t, [entry("m1", 0.9)], count)
    system, user = parts(a)
    assert system.count("Always double-check.") == 200
    assert "Compare the vendors" in user and "Wrong currency" in user
    assert a.manifest.trimmed[-1].startswith("over budget: system, task and feedback need")
    assert "handoff:s1 truncated" in a.manifest.trimmed and "memory:m1" in a.manifest.trimmed
    assert_adds_up(a)


def test_truncate_keeps_a_prefix_and_counts_what_it_cut() -> None:
    text = json.dumps({"notes": "alpha beta gamma delta " * 300})
    cut = truncate(text, 100, count)
    prefix, marker = cut.split("…[truncated ")
    assert text.startswith(prefix) and count(cut) <= 100
    assert int(marker.removesuffix(" tokens]")) == count(text) - count(prefix)
