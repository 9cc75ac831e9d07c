"""Deterministic crash points for fault tests: the process kills itself (SIGKILL, as a machine
failure would) at a named point instead of at a moment timing luck picks.

``AGENTOS_CRASH_POINT=<point>`` or ``<point>:<detail>`` (for instance
``specialist.after_action_executed:notes.add_note``) arms one point; ``AGENTOS_CRASH_ONCE=<file>``
makes it fire only while that file does not exist (it is created, and synced, just before the kill),
so a process restarted with the same environment runs on. Both are read once, at import: unset, a
point costs one comparison with None.
"""

from __future__ import annotations

import os
import signal

_POINT = os.environ.get("AGENTOS_CRASH_POINT") or None
_ONCE = os.environ.get("AGENTOS_CRASH_ONCE") or None


def crash_point(name: str, detail: str = "") -> None:
    """Die here if ``AGENTOS_CRASH_POINT`` names this point (module docs)."""
    if _POINT is None or _POINT not in (name, f"{name}:{detail}"):
        return
    if _ONCE is not None:
        try:
            fd = os.open(_ONCE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return  # it fired already: the restarted process goes on
        os.write(fd, f"{name}:{detail} pid {os.getpid()}\n".encode())
        os.fsync(fd)
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["crash_point"]
