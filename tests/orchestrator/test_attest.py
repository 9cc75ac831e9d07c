"""Attestation of an output's claims against the recorded effects (pure; no broker)."""

from __future__ import annotations

from agentos_orchestrator import attest
from agentos_orchestrator.decide import decide
from agentos_orchestrator.state import Goal, World, apply
from agentos_schemas import Event
from agentos_schemas.events import Effect, GoalPlanned, GoalSubmitted, PlanStep, TaskAssigned, TaskCompleted


def effect(outcome: str, tool: str = "send_email", fact: str = "f1", detail: str = "") -> Effect:
    return Effect(tool=tool, action="outside_action", outcome=outcome, fact_id=fact, detail=detail)  # type: ignore[arg-type]


CLAIMS = {"sent": "send_email"}


def test_a_true_claim_holds_when_one_call_was_done_or_done_before() -> None:
    assert attest.check({"sent": True}, CLAIMS, [effect("succeeded")]) == []
    assert attest.check({"sent": True}, CLAIMS, [effect("duplicate")]) == []
    assert attest.check({"sent": False}, CLAIMS, [effect("denied")]) == []
    assert attest.check({"sent": False}, CLAIMS, []) == []


def test_a_claim_the_record_contradicts_says_what_happened() -> None:
    (rejected,) = attest.check({"sent": True}, CLAIMS, [effect("rejected", detail="rejected by bob: no")])
    assert rejected == (
        "the output says sent=true, but 0 of 1 send_email call(s) done; not done: rejected (rejected by bob: no)"
    )
    (never,) = attest.check({"sent": True}, CLAIMS, [])
    assert "no send_email call is on record" in never
    (failed,) = attest.check({"sent": True}, CLAIMS, [effect("failed", detail="ERROR: disk full")])
    assert "failed (ERROR: disk full)" in failed
    (hidden,) = attest.check({"sent": False}, CLAIMS, [effect("succeeded")])
    assert "sent=false" in hidden and "1 of 1" in hidden


def test_a_count_must_equal_the_distinct_writes_done() -> None:
    claims = {"stored": "propose_memory"}
    writes = [
        effect("succeeded", "propose_memory", "a"),
        effect("succeeded", "propose_memory", "a"),
        effect("succeeded", "propose_memory", "b"),
        effect("denied", "propose_memory", "d", "rate_limit: x"),
    ]
    assert attest.check({"stored": 2}, claims, writes) == []
    (short,) = attest.check({"stored": 3}, claims, writes)
    assert "stored=3" in short and "2 of 4" in short and "denied (rate_limit: x)" in short


def test_fields_not_claimed_or_absent_are_not_checked_and_odd_values_fail() -> None:
    assert attest.check({"summary": "sent!"}, CLAIMS, []) == []
    assert attest.check({}, CLAIMS, [effect("succeeded")]) == []
    assert attest.check({"sent": "yes"}, CLAIMS, [effect("succeeded")]) != []


def _goal_with_completed_task(effects: tuple[Effect, ...]) -> tuple[World, Goal]:
    world = World()
    submitted = Event(
        data=GoalSubmitted(goal_id="g", text="t"), source="test", type=GoalSubmitted.ce_type(), tenant="t"
    )
    apply(world, submitted)
    step = PlanStep(step_id="send", capability="mail", instruction="mail", review=False)
    for data in (
        GoalPlanned(goal_id="g", revision=0, steps=(step,), planner="test"),
        TaskAssigned(
            task_id="g/r0/send/a1",
            goal_id="g",
            step_id="send",
            attempt=1,
            agent="m",
            capability="mail",
            instruction="mail",
            goal_text="t",
        ),
        TaskCompleted(
            task_id="g/r0/send/a1",
            goal_id="g",
            step_id="send",
            agent="m",
            output={"sent": True},
            claims=CLAIMS,
            effects=effects,
        ),
    ):
        goal = apply(world, Event(data=data, source="test", type=data.ce_type(), tenant="t"))
    assert goal is not None
    return world, goal


def test_an_unreviewed_step_whose_claim_fails_is_rejected_by_attestation() -> None:
    world, goal = _goal_with_completed_task((effect("rejected", detail="rejected by bob"),))
    (verdict,) = decide(world, goal, goal.submitted_at + 1)
    assert verdict.data.verdict == "rejected" and verdict.data.reviewer == attest.REVIEWER  # type: ignore[union-attr]
    assert "rejected by bob" in verdict.data.feedback  # type: ignore[union-attr]


def test_a_step_whose_claim_holds_completes_the_goal_with_its_effects() -> None:
    world, goal = _goal_with_completed_task((effect("succeeded"),))
    (done,) = decide(world, goal, goal.submitted_at + 1)
    assert done.data.effects == {"send": (effect("succeeded"),)}  # type: ignore[union-attr]


def test_every_shipped_charter_that_writes_declares_its_claims() -> None:
    from agentos_schemas.charter import Charter, load_charters
    from agentos_specialist.service import default_charters_dir, unattested_writes
    from agentos_specialist.tools import DocumentIndex, build_tools

    tools = build_tools(DocumentIndex({}))
    assert {
        c.name: unattested_writes(c, tools)
        for c in load_charters(default_charters_dir()).values()
        if unattested_writes(c, tools)
    } == {}
    silent = Charter(name="m", capabilities=("m",), model="fast", tools=("send_email", "search_documents"))
    assert unattested_writes(silent, tools) == ["send_email"]
