"""The context-manager's token counting: the resolved counter counts exactly as the kernel's
``count_tokens`` does (litellm's own API counts if its internals moved; any other failure is raised),
and a prepared system prompt assembles exactly as one built per task."""

from __future__ import annotations

import functools
import random
import sys
import types

import pytest
from agentos_context_manager import tokens
from agentos_context_manager.assemble import assemble, prepare_system
from agentos_kernel.llm import count_tokens
from agentos_schemas.charter import Charter, MemoryPolicy
from agentos_schemas.events import TaskAssigned
from agentos_schemas.rpc import MemoryEntry

WORDS = [
    "alpha",
    "beta",
    "pricing",
    "competitor",
    "report",
    "the",
    "of",
    "and",
    "Ünïcode",
    "数据",
    "42",
    "x",
    "{json}",
    "[CARD]",
    "émoji🙂",
]


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_the_resolved_counter_counts_as_count_tokens() -> None:
    count = tokens.counter("gpt-4o")
    rng = random.Random(7)
    samples = ["", " ", "a", "数据🙂", "\n\n## Heading\n- item", *(text(rng, n) for n in (1, 10, 300, 5000))]
    for sample in samples:
        assert count(sample) == count_tokens("gpt-4o", sample), sample[:40]
    assert tokens.counter("gpt-4o") is count  # resolved once per model


def test_memoized_counts_each_text_once() -> None:
    calls: list[str] = []

    def count(t: str) -> int:
        calls.append(t)
        return len(t)

    cached = tokens.memoized(count, {"known": 99})
    assert [cached("ab"), cached("ab"), cached("known"), cached("xyz")] == [2, 2, 99, 3]
    assert calls == ["ab", "xyz"]


def test_a_prepared_system_prompt_assembles_as_one_built_per_task() -> None:
    rng = random.Random(3)
    slow = functools.partial(count_tokens, "gpt-4o")
    fast = tokens.counter("gpt-4o")
    truncated = 0
    for i in range(40):
        charter = Charter(
            name="r",
            role="role",
            capabilities=("x",),
            model="fast",
            tools=("t1",),
            context_tokens=rng.choice([256, 300, 600, 1200, 5000, 100000]),
            instructions=text(rng, rng.randint(0, 80)),
            output_schema={"type": "object"},
            memory=MemoryPolicy(kinds=("working", "semantic", "episodic"), k=rng.randint(0, 6)),
        )
        deps = tuple(f"s{j}" for j in range(rng.randint(0, 4)))
        task = TaskAssigned(
            task_id="g/r0/s9/a1",
            goal_id="g",
            step_id="s9",
            attempt=1,
            agent="r",
            capability="x",
            instruction=text(rng, rng.randint(1, 40)),
            goal_text=text(rng, rng.randint(1, 40)),
            depends_on=deps,
            handoff={d: {"out": text(rng, rng.randint(1, 600)), "n": rng.randint(0, 9)} for d in deps},
            feedback=text(rng, 5) if rng.random() < 0.3 else None,
        )
        memory = [
            MemoryEntry(
                id=f"m{j}",
                kind=rng.choice(["working", "semantic", "episodic"]),
                content=text(rng, rng.randint(1, 80)),
                score=rng.random(),
                goal_id=rng.choice([None, "g", "other"]),
            )
            for j in range(rng.randint(0, 8))
        ]
        per_task = assemble(charter, task, memory, slow, notes=("memory: note",))
        prepared = assemble(charter, task, memory, fast, notes=("memory: note",), system=prepare_system(charter, fast))
        assert per_task.messages == prepared.messages, i
        assert per_task.manifest == prepared.manifest, i
        truncated += any("truncated" in t for t in per_task.manifest.trimmed)
    assert truncated > 0  # the cases include trimmed hand-offs


INTERNALS = "litellm.litellm_core_utils.token_counter"


def test_litellm_internals_that_moved_fall_back_to_token_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, INTERNALS, types.ModuleType(INTERNALS))  # no _get_count_function there
    tokens.counter.cache_clear()
    try:
        count = tokens.counter("gpt-4o")
        assert isinstance(count, functools.partial), "the public API counts"
        assert count("数据 and a heading") == count_tokens("gpt-4o", "数据 and a heading")
    finally:
        tokens.counter.cache_clear()


def test_any_other_failure_of_litellm_internals_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(model: str) -> None:
        raise RuntimeError("tokenizer failed to load")

    moved = types.ModuleType(INTERNALS)
    moved.__dict__["_get_count_function"] = failing
    monkeypatch.setitem(sys.modules, INTERNALS, moved)
    tokens.counter.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="tokenizer"):
            tokens.counter("gpt-4o")
    finally:
        tokens.counter.cache_clear()
