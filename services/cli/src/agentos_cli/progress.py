"""`agentos watch` off a terminal: one line per change, because a live display shows nothing there.

Each line starts with the time of the event that caused it; it says what changed: a step's
status (with its agent, attempt and note), a note (a plan, a failure, a QA verdict, a decided
approval), a kill switch that pauses the goal, an approval that waits for a human (with the
command that approves it), and the outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_schemas import Event
    from rich.console import Console

    from agentos_cli.goals import GoalView


class Lines:
    """Prints what changed in a :class:`~agentos_cli.goals.GoalView` since the last call."""

    def __init__(self, view: GoalView, console: Console) -> None:
        self.view, self.console = view, console
        self.steps: dict[str, tuple[str, str, int, str]] = {}
        self.notes = 0
        self.text = ""
        self.flags: set[str] = set()

    def update(self, event: Event[Any] | None = None) -> None:
        """Print the changes (``event``: the one just folded, for its time; None for a switch change)."""
        when = (event.time if event is not None and event.time else dt.datetime.now(dt.UTC)).astimezone()
        for line in self._changes():
            self.console.print(f"{when:%H:%M:%S} {line}", markup=False, highlight=False, soft_wrap=True)

    def _changes(self) -> list[str]:
        view, out = self.view, []
        if view.text and view.text != self.text:
            self.text = view.text
            out.append(f"goal {view.goal_id}: {view.text}")
        for sid, step in view.steps.items():
            state = (step.agent, step.status, step.attempts, step.note)
            if self.steps.get(sid) != state:
                self.steps[sid] = state
                who = f" ({step.agent}, attempt {step.attempts})" if step.agent else ""
                out.append(f"step {sid}: {step.status}{who}" + (f" - {step.note}" if step.note else ""))
        out += view.notes[self.notes :]
        self.notes = len(view.notes)
        current = {*view.paused_lines(), *view.waiting_lines()}
        out += sorted(current - self.flags)
        self.flags = current
        if view.outcome is not None:
            name = type(view.outcome.data).__name__
            out.append(f"goal {view.goal_id}: {'completed' if name == 'GoalCompleted' else 'failed'}")
        return out
