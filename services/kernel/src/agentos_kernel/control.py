"""Kill switches: halt one agent, one workflow (goal), one model, one tenant, or everything.

A switch is a key in the NATS KV bucket ``AGENTOS_CONTROL`` (``halt.agent.<name>``,
``halt.workflow.<goal>``, ``halt.model.<model>``, ``halt.tenant.<tenant>``, ``halt.all``): present
means halted, deleted means resumed. Every service process runs a :class:`ControlWatcher` (started
by ``start_service``) that keeps :func:`state` in step with the bucket within milliseconds.

Work is *paused*, not failed: a model call (``LLM.complete``) or a guarded tool call whose work is
halted does not start, and one running is cancelled (its asyncio task, so its HTTP request is
aborted), waits for the switch to be lifted and runs again (tool side effects carry idempotency
keys); a kernel consumer holds a halted message (in-progress acks: not redelivered, not counted as
an attempt) and stops fetching while a switch covers all it consumes; the orchestrator dispatches
nothing for a halted workflow or tenant. What an action touches is a :class:`Work`, which a
consumer sets from each event in a context variable, so ``LLM.complete`` is covered without wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js import api

from agentos_kernel.exceptions import ConfigError, Refused
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.tasks import cancel_and_wait

log = logging.getLogger("agentos.control")
T = TypeVar("T")

CONTROL_BUCKET = "AGENTOS_CONTROL"
SCOPES = ("agent", "workflow", "model", "tenant", "all")
_KEY_TOKEN = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_UNHALTED_DOMAINS = ("control", "agent")


def halt_key(scope: str, target: str = "*") -> str:
    """The bucket key of a switch: ``halt.all`` or ``halt.<scope>.<target>``."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown halt scope {scope!r}; one of {', '.join(SCOPES)}")
    if scope == "all":
        return "halt.all"
    if target in ("", "*") or not _KEY_TOKEN.match(target):
        raise ConfigError(f"halt target {target!r} must be a name of letters, digits and -/_=.")
    return f"halt.{scope}.{target}"


@dataclass(frozen=True)
class Halt:
    """One switch that is on."""

    scope: str
    target: str = "*"
    reason: str = ""
    by: str = ""
    at: float = 0.0
    revision: int = 0

    @property
    def key(self) -> str:
        """This switch's bucket key."""
        return halt_key(self.scope, self.target)

    def to_bytes(self) -> bytes:
        """The bucket value (JSON)."""
        return json.dumps({k: getattr(self, k) for k in ("scope", "target", "reason", "by", "at")}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, revision: int = 0) -> Halt:
        """A switch from its bucket value."""
        doc = json.loads(raw)
        return cls(
            doc["scope"],
            doc.get("target", "*"),
            doc.get("reason", ""),
            doc.get("by", ""),
            float(doc.get("at", 0.0)),
            revision,
        )


@dataclass(frozen=True)
class Work:
    """What an action touches; each non-empty field is a scope a switch can cover."""

    agent: str | None = None
    workflow: str | None = None
    tenant: str | None = None
    models: tuple[str, ...] = ()

    def switch_keys(self) -> list[str]:
        """Every switch key that would cover this work, ``halt.all`` first."""
        keys = ["halt.all"]
        for scope, target in (("agent", self.agent), ("workflow", self.workflow), ("tenant", self.tenant)):
            if target and _KEY_TOKEN.match(target):
                keys.append(f"halt.{scope}.{target}")
        keys += [f"halt.model.{m}" for m in self.models if m and _KEY_TOKEN.match(m)]
        return keys

    def merged(self, **changes: Any) -> Work:
        """This work with the given fields set (``None`` values are ignored; models are added)."""
        models = tuple(dict.fromkeys((*self.models, *changes.pop("models", ()))))
        return replace(self, models=models, **{k: v for k, v in changes.items() if v is not None})


class Halted(Refused):
    """The action is covered by a kill switch."""

    code = "halted"

    def __init__(self, halt: Halt) -> None:
        where = "everything" if halt.scope == "all" else f"{halt.scope} {halt.target!r}"
        super().__init__(f"halted by kill switch ({where}): {halt.reason or 'no reason given'}")
        self.halt = halt


@dataclass
class ControlState:
    """The switches one process knows about, the guarded tasks it may cancel, and waiters."""

    halts: dict[str, Halt] = field(default_factory=dict)
    listeners: list[Callable[[str, Halt | None], None]] = field(default_factory=list)
    _running: dict[asyncio.Task[Any], Work] = field(default_factory=dict)
    _cancelled: dict[asyncio.Task[Any], Halt] = field(default_factory=dict)
    _waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def covering(self, work: Work) -> Halt | None:
        """The first switch that covers ``work``, or None."""
        return next((self.halts[k] for k in work.switch_keys() if k in self.halts), None) if self.halts else None

    def check(self, work: Work) -> None:
        """Raise :class:`Halted` if a switch covers ``work``."""
        if (found := self.covering(work)) is not None:
            raise Halted(found)

    def apply(self, key: str, halt: Halt | None) -> None:
        """Record a switch turned on (``halt``) or off (None); cancel guarded work it covers."""
        if halt is None:
            if self.halts.pop(key, None) is None:
                return
        else:
            self.halts[key] = halt
            for task, work in list(self._running.items()):
                if key in work.switch_keys() and task not in self._cancelled and not task.done():
                    self._cancelled[task] = halt
                    task.cancel(msg="agentos-halt")
        for waiter in [w for w in self._waiters if not w.done()]:
            waiter.set_result(None)
        for listener in list(self.listeners):
            try:
                listener(key, halt)
            except Exception as exc:  # boundary: one listener failing must not stop the others
                log.exception("control listener failed on %s", key)
                FAULTS.note("tell a control listener of a switch change", exc, level=logging.DEBUG)  # logged above

    async def wait_change(self, timeout: float | None = None) -> None:
        """Until a switch changes (or ``timeout`` seconds pass)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    async def wait_clear(self, work: Work) -> None:
        """Until no switch covers ``work`` (returns at once when none does)."""
        while self.covering(work) is not None:
            await self.wait_change(timeout=5.0)

    @contextlib.asynccontextmanager
    async def guard(self, work: Work) -> AsyncIterator[None]:
        """Run the body only if ``work`` is not halted; cancel it (raising :class:`Halted`) if it
        becomes halted while running."""
        self.check(work)
        task = asyncio.current_task()
        assert task is not None, "guard() must run inside a task"
        self._running[task] = work
        try:
            yield
        except asyncio.CancelledError:
            halt = self._cancelled.get(task)
            if halt is not None and task.uncancel() == 0:
                raise Halted(halt) from None
            raise
        finally:
            self._running.pop(task, None)
            self._cancelled.pop(task, None)


_STATE, _WORK = ControlState(), contextvars.ContextVar("agentos_work", default=Work())  # noqa: B039 - frozen


def state() -> ControlState:
    """This process's view of the switches (kept current by the service's watcher)."""
    return _STATE


def current_work() -> Work:
    """The work the running code is doing (set by the consumer from the event it handles)."""
    return _WORK.get()


@contextlib.contextmanager
def working_on(work: Work) -> Iterator[Work]:
    """Declare the work the code inside the block does (for checks, guards and the LLM)."""
    token = _WORK.set(work)
    try:
        yield work
    finally:
        _WORK.reset(token)


def work_of(event: Any) -> Work:
    """The work an event is about: tenant, workflow (goal) and agent; none for ``control.*``/``agent.*``."""
    type_ = str(getattr(event, "type", ""))
    if any(type_.startswith(f"dev.agentos.{d}.") for d in _UNHALTED_DOMAINS):
        return Work()
    data = getattr(event, "data", None)
    workflow = getattr(data, "goal_id", None) or getattr(event, "correlationid", None)
    agent = getattr(data, "agent", None)
    return Work(
        agent=agent if isinstance(agent, str) else None, workflow=workflow, tenant=getattr(event, "tenant", None)
    )


def check(**scope: Any) -> None:
    """Raise :class:`Halted` if the current work, narrowed by ``scope``, is halted."""
    _STATE.check(current_work().merged(**scope))


def guard(**scope: Any) -> contextlib.AbstractAsyncContextManager[None]:
    """``async with control.guard(agent=…, workflow=…, models=(…,)):`` (see :meth:`ControlState.guard`)."""
    return _STATE.guard(current_work().merged(**scope))


async def run_paused(action: Callable[[], Awaitable[T]], **scope: Any) -> T:
    """Run ``action`` now or once the switches covering it are lifted; re-run it if one stops it."""
    work = current_work().merged(**scope)
    while True:
        await _STATE.wait_clear(work)
        try:
            async with _STATE.guard(work):
                return await action()
        except Halted as exc:
            log.info("paused: %s", exc)


async def open_bucket(js: Any, *, create: bool = True, replicas: int = 1) -> Any:
    """The ``AGENTOS_CONTROL`` bucket (created if missing and ``create``)."""
    with contextlib.suppress(nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
        return await js.key_value(CONTROL_BUCKET)
    if not create:
        raise nats.js.errors.BucketNotFoundError
    try:
        return await js.create_key_value(
            api.KeyValueConfig(
                bucket=CONTROL_BUCKET,
                history=16,
                replicas=replicas,
                description="AgentOS kill switches: halt.<scope>.<target>",
            )
        )
    except nats.js.errors.BadRequestError:  # another process created it meanwhile
        return await js.key_value(CONTROL_BUCKET)


async def set_halt(js: Any, halt: Halt) -> Halt:
    """Turn a switch on; returns it with the bucket revision."""
    kv = await open_bucket(js)
    return replace(halt, revision=await kv.put(halt.key, halt.to_bytes()))


async def clear_halt(js: Any, scope: str, target: str = "*") -> bool:
    """Turn a switch off; False if it was not on."""
    kv = await open_bucket(js)
    key = halt_key(scope, target)
    try:
        entry = await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    if entry is None or not entry.value:
        return False
    await kv.delete(key)
    return True


async def list_halts(js: Any) -> list[Halt]:
    """Every switch that is on, by key (an entry that does not read as a switch is passed over)."""
    kv = await open_bucket(js)
    try:
        keys = await kv.keys()
    except (nats.js.errors.NoKeysError, nats.errors.TimeoutError):
        return []
    found = []
    for key in keys:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, ValueError, KeyError):
            entry = await kv.get(key)
            if entry.value:
                found.append(Halt.from_bytes(entry.value, entry.revision))
    return sorted(found, key=lambda h: h.key)


class ControlWatcher:
    """Keeps a :class:`ControlState` in step with the bucket (one per service process)."""

    def __init__(self, js: Any, control_state: ControlState | None = None, *, create: bool = True) -> None:
        self.js = js
        self.state = control_state or _STATE
        self.create = create
        self._watch: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> ControlWatcher:
        """Open the bucket, load the switches that are on, then follow changes."""
        kv = await open_bucket(self.js, create=self.create)
        self._watch = await kv.watchall()
        while (entry := await self._watch.updates(timeout=timeout)) is not None:
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(), name="control-watcher")
        return self

    async def _follow(self) -> None:
        async for entry in self._watch:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: Any) -> None:
        try:
            off = entry.operation in ("DEL", "PURGE") or not entry.value
            self.state.apply(entry.key, None if off else Halt.from_bytes(entry.value, entry.revision))
        except (ValueError, KeyError) as exc:
            log.warning("ignoring malformed switch %s: %s", entry.key, exc)

    async def stop(self) -> None:
        """Stop following the bucket."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._watch is not None:
            with contained("stop the kill switches' watch", nats.errors.Error):
                await self._watch.stop()
