"""The async client: one connection pool, retries with backoff under a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
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

log = logging.getLogger("core.gemini")


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
        max_connections: int = 32,
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
        self._headers = {
            **self.provider.auth_headers(api_key),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds, connect=_connect_seconds(timeout_seconds)),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,  # a redirect must not carry the key to another host
        )

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
        await self._http.aclose()

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
    ) -> ImageResult:
        """One generation; raises GeminiError (or GenerationBlocked) when there is no result.

        `on_attempt()` is awaited before each request is sent, so a caller can count the call
        durably first: one cut off by a crash may still have been charged. If it raises,
        nothing is sent.
        """
        body = await asyncio.to_thread(encode_body, request)
        url = self.url_for(request.model_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout_at(deadline):
                    if on_attempt is not None:
                        await on_attempt()
                    result = await self._attempt(url, body, request.model_id)
            except TimeoutError:
                raise _out_of_time(loop.time() - started, attempt) from None
            except GeminiError as exc:
                error = _scrub(exc, self._api_key)
                error.attempts = attempt
                if not error.retryable or attempt >= self.max_attempts:
                    if attempt > 1:
                        error.detail += f" (gave up after {attempt} attempts)"
                    raise
                delay = self._delay(error, attempt)
                # a retry needs time to work; one cut off at once would only hide this error
                if loop.time() + delay + self._least_attempt_seconds > deadline:
                    error.detail += (
                        f" (gave up after {attempt} attempts: the next wait of {delay:.1f} s "
                        f"would pass the {self.deadline_seconds:g} s deadline)"
                    )
                    raise
                log.warning(
                    "image API attempt %d of %d failed (%s: %s); retrying in %.2f s",
                    attempt,
                    self.max_attempts,
                    error.reason,
                    error.detail,
                    delay,
                )
                metrics.API_RETRIES.labels(error.reason).inc()
                await asyncio.sleep(delay)
            else:
                return replace(result, attempts=attempt)

    @property
    def _least_attempt_seconds(self) -> float:
        return min(10.0, self.deadline_seconds / 4)

    def _delay(self, error: GeminiError, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    async def _attempt(self, url: str, body: bytes, model_id: str) -> ImageResult:
        sent = time.monotonic()
        try:
            response = await self._http.post(url, content=body, headers=self._headers)
        except httpx.TransportError as exc:
            metrics.API_LATENCY.labels("0").observe(time.monotonic() - sent)
            raise _transport_error(exc, self.timeout_seconds) from exc
        metrics.API_LATENCY.labels(str(response.status_code)).observe(time.monotonic() - sent)
        if response.status_code == 200:
            # A 200 that cannot be read is not retried: the generation may have been charged.
            if len(response.content) > 1_000_000:
                return await asyncio.to_thread(
                    parse_response, response.content, model_id=model_id, provider=self.provider
                )
            return parse_response(response.content, model_id=model_id, provider=self.provider)
        raise error_from_response(
            response.status_code,
            response.content,
            response.headers,
            model_id=model_id,
            provider=self.provider,
        )


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
