"""How many image API calls run at once: a limit per model that follows the API's answers,
under a hard maximum, and a budget for the bytes of answers held in memory.

The limit starts at the hard maximum, since a real API answers in 10–130 s and only its
refusals say where its capacity ends. A refusal (429, or a 503 "overloaded") pauses every
call to that model for the `Retry-After`/`retryDelay` the API asked for (or a backoff),
and when the pause ends the limit is halved, but not below the number of calls that were
in flight when the refusal came and were not refused since: those are what the API
accepted. While calls succeed with the limit reached, it grows by one per limit's worth
of successes (additive increase), so a raised quota is found again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from core import metrics

BACKOFF = 0.5  # the most a round of refusals takes off the limit


class Slot:
    """One call's place under a limit; say how it went before leaving."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.outcome: str | None = None  # "ok", "refused" or None (neither: no signal)
        self.pause = 0.0

    def succeeded(self) -> None:
        self.outcome = "ok"

    def refused(self, pause: float) -> None:
        """The API refused this call for want of capacity (429, or 503 overloaded): no call
        to the model starts for `pause` seconds."""
        self.outcome = "refused"
        self.pause = pause


class AdaptiveLimit:
    """Calls to one model at once: additive increase, and on refusal a pause for the time
    the API asked, then the limit set to what the API was seen to accept."""

    def __init__(
        self,
        name: str,
        maximum: int,
        *,
        on_room: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self.paused_until = 0.0
        self._on_room = on_room
        self._numbers = itertools.count()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._calls: set[int] = set()  # numbers of the calls in flight
        # a refusal's snapshot: calls in flight when it came, less those refused since
        self._accepted: set[int] | None = None
        self._resume: asyncio.TimerHandle | None = None
        metrics.API_CONCURRENCY_LIMIT.labels(name).set(self.limit)

    @property
    def paused(self) -> bool:
        return asyncio.get_running_loop().time() < self.paused_until

    @property
    def room(self) -> int:
        """How many more calls asking now would start at once."""
        if self.paused:
            return 0
        return max(0, max(1, int(self.limit)) - self.in_flight - len(self._waiters))

    @property
    def has_room(self) -> bool:
        return self.room > 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        await self._acquire()
        slot = Slot(next(self._numbers))
        self._calls.add(slot.number)
        try:
            yield slot
        finally:
            self._calls.discard(slot.number)
            self.in_flight -= 1
            self._account(slot)
            self._wake()

    async def _acquire(self) -> None:
        if self.has_room:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # its place was counted in in_flight when it was woken
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.in_flight -= 1  # woken and cancelled at once: give the place back
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise

    def _account(self, slot: Slot) -> None:
        if slot.outcome == "ok":
            binding = self._waiters or self.in_flight + 1 >= int(self.limit)
            if self._accepted is None and binding:
                self._set(min(self.maximum, self.limit + 1 / max(1.0, self.limit)))
            return
        if slot.outcome != "refused":
            return
        loop = asyncio.get_running_loop()
        if self._accepted is None:
            # the first refusal of a round: what is in flight now is what it measures
            self._accepted = set(self._calls)
        self._accepted.discard(slot.number)
        until = loop.time() + slot.pause
        if until > self.paused_until:
            self.paused_until = until
            if self._resume is not None:
                self._resume.cancel()
            self._resume = loop.call_at(until, self._end_pause)

    def _end_pause(self) -> None:
        self._resume = None
        if self._accepted is not None:
            accepted = len(self._accepted)
            self._accepted = None
            # at most halved (a refusal at light load is a rate quota: the pause is the
            # answer), and never below what the API was seen to accept
            self._set(max(1.0, min(self.limit, max(float(accepted), self.limit * BACKOFF))))
        self._wake()

    def _set(self, limit: float) -> None:
        self.limit = limit
        metrics.API_CONCURRENCY_LIMIT.labels(self.name).set(limit)

    def _wake(self) -> None:
        if self.paused:
            return
        while self._waiters and self.in_flight < max(1, int(self.limit)):
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self.in_flight += 1
            waiter.set_result(None)
        if self.has_room:
            self._on_room()


class MemoryHold:
    """Bytes of one job's answer kept in memory, from its arrival until it is delivered."""

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.size = 0

    async def grow_to(self, size: int) -> None:
        """Hold `size` bytes in all, waiting while the budget cannot give them."""
        if size > self.size:
            await self._budget._take(size - self.size, self.size)
            self.size = size

    def shrink_to(self, size: int) -> None:
        if size < self.size:
            self._budget._give(self.size - size)
            self.size = size

    def release(self) -> None:
        self.shrink_to(0)


class MemoryBudget:
    """Bytes of answers held at once. A request waits (its answer unread, so the API's
    connection holds it back) until the bytes are free; one answer larger than the whole
    budget goes alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, int, asyncio.Future[None]]] = deque()

    def hold(self) -> MemoryHold:
        return MemoryHold(self)

    @property
    def waiting(self) -> int:
        """Answers waiting, unread, for memory."""
        return len(self._waiters)

    def _fits(self, size: int, own: int) -> bool:
        return self.used == own or self.used + size <= self.capacity

    async def _take(self, size: int, own: int) -> None:
        """`size` more bytes for a hold that has `own` already."""
        if not self._waiters and self._fits(size, own):
            self._add(size)
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, own, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(size)
            else:
                self._waiters.remove(entry)
                self._wake()
            raise

    def _add(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)
        metrics.ANSWER_BYTES_HELD.set(self.used)

    def _give(self, size: int) -> None:
        self.used -= size
        metrics.ANSWER_BYTES_HELD.set(self.used)
        self._wake()

    def _wake(self) -> None:
        # first come, first served: a large answer is not passed over forever by small ones
        while self._waiters and self._fits(*self._waiters[0][:2]):
            size, _, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._add(size)
            waiter.set_result(None)


class Throttle:
    """Every limit of one process: one AdaptiveLimit per model id sent, the memory budget,
    and a callback for whoever waits for room (the service's job dispatcher)."""

    def __init__(self, maximum: int, memory_bytes: int) -> None:
        self.maximum = maximum
        self.memory = MemoryBudget(memory_bytes)
        self._limits: dict[str, AdaptiveLimit] = {}
        self._listeners: list[Callable[[], None]] = []

    def on_room(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a model's limit has room again."""
        self._listeners.append(listener)

    def off_room(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def limit_for(self, model_id: str) -> AdaptiveLimit:
        limit = self._limits.get(model_id)
        if limit is None:
            limit = AdaptiveLimit(model_id, self.maximum, on_room=self._room)
            self._limits[model_id] = limit
        return limit

    def _room(self) -> None:
        for listener in self._listeners:
            listener()
