"""Taking a request in, the same way on every platform: hold it, acknowledge it, do its work
(downloads, submit, the queued message), tell the person what went wrong, let it go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import StoreError, UserFacingError
from core.service import Service
from core.wording import INTERNAL

log = logging.getLogger(__name__)

# may return False: the platform would not take it (the request expired, or another process
# answered it), and the request is let go
Acknowledge = Callable[[], Awaitable[bool | None]]
Work = Callable[[], Awaitable[Any]]
Tell = Callable[[str], Awaitable[Any]]


class Intake:
    """The one path every request takes.

    A request is kept in the store before the platform is told it arrived, so a process
    killed right after the acknowledgement loses nothing: the process that takes the held
    request over runs its work again (`finish`). A request held or stored already (a
    platform's retry, a replay) is acknowledged and dropped.
    """

    def __init__(self, service: Service, platform: str) -> None:
        self.service = service
        self.platform = platform
        self._working: set[asyncio.Task[Any]] = set()

    async def take(
        self,
        key: str,
        payload: dict[str, Any],
        *,
        acknowledge: Acknowledge,
        work: Work,
        tell: Tell,
    ) -> None:
        """All of it, in order: for a request whose acknowledgement and work share a task."""
        if await self.receive(key, payload, acknowledge=acknowledge, tell=tell):
            await self.finish(key, work, tell)

    async def receive(
        self, key: str, payload: dict[str, Any], *, acknowledge: Acknowledge, tell: Tell
    ) -> bool:
        """Hold, then acknowledge; True when the work is this caller's to do (then call
        `finish`). The platform is acknowledged either way, so it does not send it again."""
        try:
            fresh = await self.service.hold(self.platform, key, payload)
        except StoreError as exc:
            await acknowledge()
            await _tell(tell, exc.message)
            return False
        except Exception:
            log.exception("could not hold request %s", key)
            await acknowledge()
            await _tell(tell, INTERNAL)
            return False
        try:
            acknowledged = await acknowledge()
        except BaseException:
            if fresh:  # nobody was told it arrived: nothing to finish
                await self.service.release(key)
            raise
        if acknowledged is False:
            if fresh:
                await self.service.release(key)
            return False
        return fresh

    async def finish(self, key: str, work: Work, tell: Tell) -> None:
        """The work, one sentence if it failed, then let go of the request. Also what a
        process runs for a request it took over from a dead one."""
        task = asyncio.current_task()
        assert task is not None
        self._working.add(task)
        try:
            try:
                await work()
            except UserFacingError as exc:
                log.info("request %s refused: %s %s", key, exc.message, exc.detail)
                await _tell(tell, exc.message)
            except Exception:
                log.exception("request %s failed", key)
                await _tell(tell, INTERNAL)
            # not in a `finally`: a shutdown that cancels the work leaves the request held,
            # and the next process finishes it
            await self.service.release(key)
        finally:
            self._working.discard(task)

    async def stop(self) -> None:
        """A shutdown: cancel the work under way, before the adapter closes the clients it
        uses, so it stays held for the next process rather than failing here."""
        working = list(self._working)
        for task in working:
            task.cancel()
        await asyncio.gather(*working, return_exceptions=True)


async def _tell(tell: Tell, message: str) -> None:
    try:
        await tell(message)
    except Exception:
        log.warning("could not tell the person: %s", message, exc_info=True)
