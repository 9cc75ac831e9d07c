"""What `agentos watch` shows while a kill switch pauses a goal's work."""

from __future__ import annotations

import time

from agentos_cli.goals import GoalView, StepView
from agentos_kernel import control
from rich.console import Console


def view_with(*steps: tuple[str, str, str]) -> GoalView:
    view = GoalView("g-1", tenant="acme")
    view.steps = {sid: StepView(agent=agent, status=status) for sid, agent, status in steps}
    return view


def test_the_switches_that_pause_a_goal_are_those_of_its_unfinished_work() -> None:
    view = view_with(("a", "research", "running"), ("b", "writer", "done"), ("c", "qa", "assigned"))
    keys = view.covering_keys()
    assert {"halt.all", "halt.workflow.g-1", "halt.tenant.acme", "halt.agent.research", "halt.agent.qa"} <= keys
    assert "halt.agent.writer" not in keys  # its step is done: halting it pauses nothing here
    assert "halt.tenant.other" not in keys and "halt.workflow.g-2" not in keys


def test_a_paused_goal_says_by_which_switch_and_how_to_lift_it() -> None:
    view = view_with(("a", "research", "running"))
    view.paused_by = [control.Halt("agent", "research", "provider [incident]", "user:ops", time.time())]
    console = Console(width=200, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "paused by halt.agent.research: provider [incident] (user:ops)" in text
    assert "agentos resume" in text
