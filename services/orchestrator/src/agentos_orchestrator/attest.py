"""Attestation: an output's claims about its writes, checked against what really happened (pure).

A charter names the output fields that state what its writes did (``claims``: ``{sent:
send_email}``, ``{stored: propose_memory}``). ``task.completed`` carries those names and the
task's recorded effects — one per write tool call, built by the specialist's tool path from the
policy decision and the ``action.executed`` / ``memory.proposed`` fact, never from the model's
words. A claim is true when:

- a boolean field is ``true`` exactly when at least one call of its tool was done (``succeeded``,
  or ``duplicate``: done by an earlier attempt), and ``false`` when none was;
- an integer field equals the number of distinct facts of its tool that were done.

A claim that does not hold rejects the step at once, without a QA model, with feedback that
says what really happened; the step is then retried or re-planned like any rejected step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentos_schemas.events import Effect

REVIEWER = "attestation"
"""The reviewer named on a verdict given by attestation (no model involved)."""


def done_count(effects: Sequence[Effect]) -> int:
    """Distinct writes done: the same fact recorded twice (a re-asked call) counts once."""
    return len({e.fact_id or e.detail for e in effects if e.done})


def what_happened(tool: str, effects: Sequence[Effect]) -> str:
    """One line on the recorded effects of ``tool``: how many calls were done, and why the others were not."""
    if not effects:
        return f"no {tool} call is on record (it never ran)"
    done = done_count(effects)
    others = [f"{e.outcome} ({e.detail})" if e.detail else e.outcome for e in effects if not e.done]
    line = f"{done} of {len(effects)} {tool} call(s) done"
    return f"{line}; not done: {'; '.join(others)}" if others else line


def check(output: Mapping[str, Any], claims: Mapping[str, str], effects: Sequence[Effect]) -> list[str]:
    """The claims of ``output`` that the recorded ``effects`` contradict, each said plainly (empty: all hold)."""
    problems: list[str] = []
    for field, tool in sorted(claims.items()):
        if field not in output:
            continue
        claimed = output[field]
        mine = [e for e in effects if e.tool == tool]
        done = done_count(mine)
        if isinstance(claimed, bool):
            holds = claimed == (done > 0)
        elif isinstance(claimed, int):
            holds = claimed == done
        else:
            holds = False
        if not holds:
            problems.append(f"the output says {field}={json.dumps(claimed)}, but {what_happened(tool, mine)}")
    return problems


def feedback(problems: Sequence[str]) -> str:
    """The rejection's feedback: every contradicted claim, and what to do."""
    return "Claims not borne out by the record: " + " | ".join(problems) + ". Report only what was actually done."
