"""Which replica of a service acts on which keys: partitions leased in the ``AGENTOS_LEASES`` bucket.

Keys (goal ids) hash into a fixed number of partitions. Each partition is leased by at most one
replica at a time: a lease is the key ``<service>.partition.<n>``, taken with a create that fails if
it exists, kept with compare-and-set updates on its last revision, and given back with a delete on
that revision. The bucket drops an entry :data:`LEASE_TTL_S` after its last write, so the leases of
a replica that died lapse on their own; a holder counts its lease as lost a third of that earlier
(:data:`SAFETY`, from the time it sent its last refresh), so two replicas never both hold one.

Live replicas announce themselves under ``<service>.member.<instance>`` (same expiry). Each
partition has one preferred holder among them (rendezvous hashing: the member with the highest
hash of partition and member). Every ``every_s`` a replica refreshes what it holds, takes free
partitions it is preferred for, and gives back those preferred for another live member, unless
``can_release`` says it is in the middle of something there. A replica that joins thus takes its
share within a round or two, and one that leaves (or dies) hands its share to the others.

A partition just taken is not acted on until ``on_acquired`` has run: the caller catches up with
the log there (:meth:`agentos_kernel.follow.Follower.sync`), so it sees every decision the last
holder published before it let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from agentos_schemas import subjects as s
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from agentos_kernel.exceptions import ConfigError
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.tasks import cancel_and_wait

if TYPE_CHECKING:
    from agentos_kernel.bus import Bus

log = logging.getLogger("agentos.ownership")
LEASE_TTL_S = 10.0
"""How long a lease (and a member's announcement) outlives its holder's last write."""
SAFETY = 1 / 3
"""Share of :data:`LEASE_TTL_S` before expiry at which a holder stops counting its lease as held."""


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key`` (a stable hash: every replica and every version agree)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % partitions


def preferred(partition: int, members: Iterable[str]) -> str | None:
    """The member preferred to hold ``partition`` (rendezvous hashing), or None without members."""

    def weight(member: str) -> bytes:
        return hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()

    return max(members, key=weight, default=None)


async def open_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The leases bucket, created if missing."""
    with contextlib.suppress(nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
        return await js.key_value(s.LEASES_BUCKET)
    config = api.KeyValueConfig(
        bucket=s.LEASES_BUCKET,
        ttl=LEASE_TTL_S,
        history=1,
        replicas=replicas,
        description="AgentOS partition leases and members: <service>.{partition,member}.*",
    )
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:  # another process created it meanwhile
        return await js.key_value(s.LEASES_BUCKET)


class Ownership:
    """This replica's share of ``service``'s partitions (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        instance: str,
        *,
        partitions: int = 16,
        every_s: float = 2.0,
        on_acquired: Callable[[list[int]], Awaitable[None]] | None = None,
        can_release: Callable[[int], bool] | None = None,
    ) -> None:
        if not 0 < every_s <= LEASE_TTL_S * (1 - SAFETY) / 2:
            raise ConfigError(
                f"{service}: leases are renewed every {every_s}s; it must be more than 0 and at "
                f"most {LEASE_TTL_S * (1 - SAFETY) / 2:.2f}s (they lapse {LEASE_TTL_S:.0f}s "
                "after the last renewal)"
            )
        self.bus, self.service, self.partitions, self.every_s = bus, service, partitions, every_s
        self.me = re.sub(r"[^A-Za-z0-9_-]", "_", instance)
        self.on_acquired, self.can_release = on_acquired, can_release
        self.held: dict[int, int] = {}
        """Partition -> revision of our lease entry."""
        self.fresh_until: dict[int, float] = {}
        self.active: set[int] = set()
        """Held partitions this replica acts on (``on_acquired`` has run for them)."""
        self.members: list[str] = []
        self.kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    def owns(self, key: str) -> bool:
        """Whether this replica acts on ``key`` now."""
        p = partition_of(key, self.partitions)
        return p in self.active and asyncio.get_running_loop().time() < self.fresh_until.get(p, 0.0)

    def _key(self, kind: str, name: object) -> str:
        return f"{self.service}.{kind}.{name}"

    async def start(self) -> None:
        """Announce this replica, take its share once, then keep it current in the background."""
        self.kv = await open_bucket(self.bus.js, self.bus.settings.replicas)
        await self.round()
        self._task = asyncio.create_task(self._loop(), name=f"ownership:{self.service}")

    async def stop(self) -> None:
        """Give every lease back and leave the members (the others take over within a round)."""
        await cancel_and_wait(self._task)
        self._task = None
        self.active.clear()
        # Best effort: a lease not given back lapses on its own, LEASE_TTL_S after its last refresh.
        for p, revision in list(self.held.items()):
            with (
                contained(
                    f"{self.service}: give a partition lease back on stop", nats.errors.Error, OSError, TimeoutError
                ),
                contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError),  # lapsed, taken: not ours
            ):
                await self._kv().delete(self._key("partition", p), last=revision)
        self.held.clear()
        with contained(f"{self.service}: leave the members on stop", nats.errors.Error, OSError, TimeoutError):
            await self._kv().delete(self._key("member", self.me))

    def _kv(self) -> KeyValue:
        assert self.kv is not None, "Ownership.start() first"
        return self.kv

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (boundary: a failed round, the bus away or on_acquired failing, must not stop the rounds; leases lapse on their own, owns( says so))
                log.warning("%s: keeping partition leases failed: %r", self.service, exc)
                FAULTS.note(f"{self.service}: keep the partition leases", exc, level=logging.DEBUG)  # logged above

    async def round(self) -> None:
        """One pass: announce, read the members, refresh / give back / take partitions."""
        kv = self._kv()
        await kv.put(self._key("member", self.me), b"1")
        try:  # (a filter would make nats-py log a warning on every call)
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        prefix = self._key("member", "")
        self.members = sorted({k.removeprefix(prefix) for k in keys if k.startswith(prefix)} | {self.me})
        taken: list[int] = []
        for p in range(self.partitions):
            mine = preferred(p, self.members) == self.me
            if p in self.held:
                await self._keep_or_release(p, mine)
            elif mine and await self._take(p):
                taken.append(p)
        if taken:
            if self.on_acquired is not None:
                await self.on_acquired(taken)
            self.active.update(p for p in taken if p in self.held)
            log.info("%s: took partitions %s (members: %s)", self.service, taken, ", ".join(self.members))

    async def _take(self, p: int) -> bool:
        now = asyncio.get_running_loop().time()
        try:
            self.held[p] = await self._kv().create(self._key("partition", p), self.me.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # still held: its holder gives it back on its next round
        self.fresh_until[p] = now + LEASE_TTL_S * (1 - SAFETY)
        return True

    async def _keep_or_release(self, p: int, mine: bool) -> None:
        key = self._key("partition", p)
        if not mine and (self.can_release is None or self.can_release(p)):
            self.active.discard(p)  # stop acting first, then let go
            revision = self.held.pop(p)
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self._kv().delete(key, last=revision)
            return
        now = asyncio.get_running_loop().time()
        try:
            self.held[p] = await self._kv().update(key, self.me.encode(), last=self.held[p])
        except nats.js.errors.KeyWrongLastSequenceError:  # it lapsed and another replica took it
            self.active.discard(p)
            self.held.pop(p, None)
            log.warning("%s: lost the lease of partition %d", self.service, p)
            return
        self.fresh_until[p] = now + LEASE_TTL_S * (1 - SAFETY)
