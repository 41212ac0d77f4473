"""The async client: one connection pool, retries with backoff under a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from types import TracebackType

import httpx

from core import metrics
from core.gemini._errors import (
    BAD_ROOT_MESSAGE,
    GeminiError,
    _connect_seconds,
    _one_line,
    _scrub,
    _text,
    _transport_error,
    error_from_response,
)
from core.gemini._models import ListedModel, parse_model_list
from core.gemini._responses import parse_response
from core.gemini._types import (
    ImageRequest,
    ImageResult,
)
from core.gemini._wire import encode_body
from core.providers import Provider, choose_provider
from core.throttle import MemoryHold, Slot, Throttle

log = logging.getLogger("core.gemini")

MIB = 1024 * 1024
# an answer's size when the server does not say it (chunked): base64 JSON by size asked
_EXPECTED_ANSWER_BYTES = {"512": 1 * MIB, "0.5K": 1 * MIB, "1K": 3 * MIB, "2K": 12 * MIB}
_EXPECTED_LARGEST = 56 * MIB  # a 4K PNG
_POOL_CONNECTIONS = 32
# 429s for want of capacity do not count as tries, up to this many per generation
_FREE_REFUSALS = 40


class GeminiClient:
    """Calls generateContent over one shared connection pool, with bounded retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        provider: Provider | None = None,
        timeout_seconds: float = 180.0,
        max_attempts: int = 4,
        deadline_seconds: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 30.0,
        throttle: Throttle | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.provider = provider or choose_provider("auto", self.base_url)
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.deadline_seconds = deadline_seconds
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._api_key = api_key
        # calls at once (per model, adaptive) and answer bytes held; there are as many
        # connections as the hard maximum, so the limit, not the pool, decides what waits
        self.throttle = throttle or Throttle(maximum=32, memory_bytes=512 * MIB)
        self._headers = {
            **self.provider.auth_headers(api_key),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        # Several pools of at most _POOL_CONNECTIONS each: httpcore's bookkeeping on every
        # request's start and end is quadratic in its pool's connections, which with 200
        # calls in flight took a sixth of the process's time.
        pools = -(-self.throttle.maximum // _POOL_CONNECTIONS)
        tls = httpx.create_ssl_context()  # one for all: each costs ~20 ms to load
        self._pools = [
            httpx.AsyncClient(
                transport=transport,
                verify=tls,
                timeout=httpx.Timeout(timeout_seconds, connect=_connect_seconds(timeout_seconds)),
                limits=httpx.Limits(
                    max_connections=_POOL_CONNECTIONS,
                    max_keepalive_connections=_POOL_CONNECTIONS,
                    keepalive_expiry=30.0,
                ),
                follow_redirects=False,  # a redirect must not carry the key to another host
            )
            for _ in range(pools)
        ]
        self._calls_by_pool = [0] * pools
        self._http = self._pools[0]  # for the odd call outside generation

    def __repr__(self) -> str:
        return (
            f"GeminiClient(base_url={self.base_url!r}, provider={self.provider.name!r}, "
            f"max_attempts={self.max_attempts})"
        )

    async def __aenter__(self) -> GeminiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    def url_for(self, model_id: str) -> str:
        return f"{self.base_url}/v1beta/models/{model_id}:generateContent"

    @property
    def models_url(self) -> str:
        return f"{self.base_url}/v1beta/models"

    async def list_models(
        self, *, timeout_seconds: float = 10.0, max_pages: int = 10
    ) -> list[ListedModel]:
        """The models the server lists (`GET /v1beta/models`), for checking a setup: free
        (nothing is generated), one try per page, no retries. Raises GeminiError with the
        same sentence a generation would meet for a bad key, provider or root."""
        headers = {**self.provider.auth_headers(self._api_key), "Accept": "application/json"}
        models: list[ListedModel] = []
        token: str | None = None
        for _ in range(max_pages):
            params = {"pageSize": "1000", **({"pageToken": token} if token else {})}
            try:
                response = await self._http.get(
                    self.models_url, params=params, headers=headers, timeout=timeout_seconds
                )
                if response.status_code != 200:
                    raise self._list_error(response)
                page, token = parse_model_list(response.content, provider=self.provider)
            except httpx.TransportError as exc:
                raise _scrub(_transport_error(exc, timeout_seconds), self._api_key) from exc
            except GeminiError as exc:
                raise _scrub(exc, self._api_key) from None
            models.extend(page)
            if token is None:
                break
        return models

    def _list_error(self, response: httpx.Response) -> GeminiError:
        if response.status_code == 404:
            # whatever the body says, no list here means no API root here
            return GeminiError(
                BAD_ROOT_MESSAGE,
                reason="bad_url",
                status=404,
                detail=f"HTTP 404 on GET {self.models_url}: {_one_line(_text(response.content))}",
            )
        return error_from_response(
            response.status_code,
            response.content,
            response.headers,
            model_id="",
            provider=self.provider,
        )

    async def generate(
        self,
        request: ImageRequest,
        on_attempt: Callable[[], Awaitable[None]] | None = None,
        memory: MemoryHold | None = None,
    ) -> ImageResult:
        """One generation; raises GeminiError (or GenerationBlocked) when there is no result.

        `on_attempt()` is awaited before each request is sent, so a caller can count the call
        durably first: one cut off by a crash may still have been charged. If it raises,
        nothing is sent. Each call waits for room under the model's limit; a refusal for
        want of capacity (429, 503) pauses every call to the model, and a 429 is tried again
        after the pause without counting as a try, within the deadline. `memory` holds the answer's
        bytes from their arrival (the decoded images' bytes once parsed); the caller
        releases it once they are delivered. Without one, they are let go on return.
        """
        body = await asyncio.to_thread(encode_body, request)
        url = self.url_for(request.model_id)
        limit = self.throttle.limit_for(request.model_id)
        hold = memory or self.throttle.memory.hold()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.deadline_seconds
        calls = tries = refusals = 0
        try:
            while True:
                calls += 1
                try:
                    async with asyncio.timeout_at(deadline), limit.slot() as slot:
                        if on_attempt is not None:
                            await on_attempt()
                        result = await self._attempt(url, body, request, slot, hold)
                except TimeoutError:
                    raise _out_of_time(loop.time() - started, calls) from None
                except GeminiError as exc:
                    error = _scrub(exc, self._api_key)
                    error.attempts = calls
                    # a rate limit says "not now", not "this failed": the pause is the wait
                    refused = (
                        error.reason == "rate_limited"
                        and self.max_attempts > 1  # one try asked for: no retry at all
                        and refusals < _FREE_REFUSALS
                    )
                    if refused:
                        refusals += 1
                    else:
                        tries += 1
                    if not error.retryable or tries >= self.max_attempts:
                        if calls > 1:
                            error.detail += f" (gave up after {calls} attempts)"
                        raise
                    # a refusal waits out the model's pause, which every call shares
                    delay = (
                        max(0.0, limit.paused_until - loop.time())
                        if refused
                        else self._delay(error, tries)
                    )
                    # a retry needs time to work; one cut off at once would only hide this
                    if loop.time() + delay + self._least_attempt_seconds > deadline:
                        error.detail += (
                            f" (gave up after {calls} attempts: the next wait of {delay:.1f} s "
                            f"would pass the {self.deadline_seconds:g} s deadline)"
                        )
                        raise
                    if refused:
                        log.info(
                            "image API call %d refused for want of capacity (%s); trying "
                            "again in %.2f s",
                            calls,
                            error.detail,
                            delay,
                        )
                    else:
                        log.warning(
                            "image API attempt %d of %d failed (%s: %s); retrying in %.2f s",
                            tries,
                            self.max_attempts,
                            error.reason,
                            error.detail,
                            delay,
                        )
                    metrics.API_RETRIES.labels(error.reason).inc()
                    if not refused:
                        await asyncio.sleep(delay)
                else:
                    return replace(result, attempts=calls)
        finally:
            if memory is None:
                hold.release()

    @property
    def _least_attempt_seconds(self) -> float:
        return min(10.0, self.deadline_seconds / 4)

    def _delay(self, error: GeminiError, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    @asynccontextmanager
    async def _pool(self) -> AsyncIterator[httpx.AsyncClient]:
        """The pool with the fewest calls under way."""
        least = min(range(len(self._pools)), key=self._calls_by_pool.__getitem__)
        self._calls_by_pool[least] += 1
        try:
            yield self._pools[least]
        finally:
            self._calls_by_pool[least] -= 1

    async def _attempt(
        self, url: str, body: bytes, request: ImageRequest, slot: Slot, hold: MemoryHold
    ) -> ImageResult:
        sent = time.monotonic()
        try:
            async with (
                self._pool() as http,
                http.stream("POST", url, content=body, headers=self._headers) as r,
            ):
                if r.status_code == 200:
                    # the answer waits, unread, until memory is free for it and its parse
                    await hold.grow_to(2 * _answer_bytes(r.headers, request))
                    content = await _read(r)
                else:
                    content = await r.aread()
        except httpx.TransportError as exc:
            metrics.API_LATENCY.labels("0").observe(time.monotonic() - sent)
            raise _transport_error(exc, self.timeout_seconds) from exc
        metrics.API_LATENCY.labels(str(r.status_code)).observe(time.monotonic() - sent)
        if r.status_code == 200:
            slot.succeeded()
            # A 200 that cannot be read is not retried: the generation may have been charged.
            if len(content) > 1_000_000:
                result = await asyncio.to_thread(
                    parse_response, content, model_id=request.model_id, provider=self.provider
                )
            else:
                result = parse_response(content, model_id=request.model_id, provider=self.provider)
            del content
            hold.shrink_to(sum(len(p.image.data) for p in result.parts if p.image is not None))
            return result
        error = error_from_response(
            r.status_code, content, r.headers, model_id=request.model_id, provider=self.provider
        )
        if _is_refusal(error):
            # as long as the API asked, else the first step of the backoff
            pause = error.retry_after
            slot.refused(self.backoff_base_seconds if pause is None else pause)
            metrics.API_THROTTLED.labels(request.model_id).inc()
        raise error


async def _read(response: httpx.Response) -> bytes | bytearray:
    """The whole body. With its length known and nothing to decompress, into one buffer of
    that size, as it arrives: a 4K PNG answer is 53 MB, and gathering it in 64 KiB pieces
    and joining them costs a second copy of it."""
    try:
        size = int(response.headers["content-length"])
    except (KeyError, ValueError):
        size = -1
    encoded = response.headers.get("content-encoding", "identity") != "identity"
    if size < 0 or encoded or response.is_stream_consumed:  # (read already: a test's answer)
        return await response.aread()
    body = bytearray(size)
    at = 0
    async for chunk in response.aiter_raw():
        # in place while it fits; a longer body than said (a proxy's wrong header) grows it
        body[at : at + len(chunk)] = chunk
        at += len(chunk)
    del body[at:]  # shorter than it said: h11 refuses that, but keep what came
    return body


def _is_refusal(error: GeminiError) -> bool:
    """Whether the API said it has no capacity for this call now: a 429 that is not a spent
    quota, or a 503 (Google's "model is overloaded")."""
    return error.retryable and (error.reason == "rate_limited" or error.status == 503)


def _answer_bytes(headers: httpx.Headers, request: ImageRequest) -> int:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        if request.answer_schema is not None:
            return MIB  # words only
        return _EXPECTED_ANSWER_BYTES.get(request.image_size or "", _EXPECTED_LARGEST)


def _out_of_time(waited: float, attempts: int) -> GeminiError:
    tries = "1 try" if attempts == 1 else f"{attempts} tries"
    error = GeminiError(
        f"The image service made no picture in {_duration(waited)} ({tries}), so I stopped "
        "waiting; try again later, perhaps at a smaller size.",
        reason="deadline",
        detail=f"the generation deadline passed after {waited:.1f} s and {tries}",
    )
    error.attempts = attempts
    return error


def _duration(seconds: float) -> str:
    if seconds < 90:
        whole = max(1, round(seconds))
        return f"{whole} second{'s' * (whole != 1)}"
    minutes = round(seconds / 60)
    return f"{minutes} minutes"
