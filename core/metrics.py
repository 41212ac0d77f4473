"""Prometheus metrics, and the small HTTP server that shows them with a health check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

JOBS = Counter("imagebot_jobs_total", "Jobs finished, by outcome", ["platform", "outcome"])
JOBS_IN_FLIGHT = Gauge("imagebot_jobs_running", "Jobs generating in this process")
API_LATENCY = Histogram(
    "imagebot_api_request_seconds",
    "Time of one image API call, by HTTP status (0 when no answer came)",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 35, 60, 90, 130, 200, 300),
)
API_RETRIES = Counter(
    "imagebot_api_retries_total", "Image API calls retried, by reason", ["reason"]
)
COST = Counter("imagebot_estimated_cost_usd_total", "Estimated spend, by model", ["model"])
DELIVERY_FAILURES = Counter(
    "imagebot_delivery_failures_total", "Failed attempts to show a result", ["platform"]
)
API_CONCURRENCY_LIMIT = Gauge(
    "imagebot_api_concurrency_limit",
    "Image API calls allowed at once, as learned from the API's answers, by model",
    ["model"],
)
API_THROTTLED = Counter(
    "imagebot_api_throttled_total",
    "Image API calls refused for want of capacity (429, 503 overloaded), by model",
    ["model"],
)
ANSWER_BYTES_HELD = Gauge(
    "imagebot_answer_bytes_held", "Bytes of image API answers held in memory until delivered"
)
DATABASE_BYTES = Gauge("imagebot_database_bytes", "Size of the database on disk")
STORE_ERRORS = Counter(
    "imagebot_store_errors_total", "Writes the database refused (disk full, read-only, ...)"
)


async def metrics_endpoint(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


Health = Callable[[], tuple[bool, dict[str, Any]]]


def _always_healthy() -> tuple[bool, dict[str, Any]]:
    return True, {"ok": True}


def add_routes(app: web.Application, health: Health = _always_healthy) -> None:
    """`GET /metrics` and `GET /healthz` on an existing aiohttp application; /healthz
    answers 503 with the reason in its JSON while `health()` says the process cannot work."""

    async def health_endpoint(_request: web.Request) -> web.Response:
        ok, body = health()
        return web.json_response(body, status=200 if ok else 503)

    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", health_endpoint)


async def serve(
    port: int, host: str = "0.0.0.0", health: Health = _always_healthy
) -> web.AppRunner:
    """A stand-alone /metrics and /healthz server (for modes without an HTTP server)."""
    app = web.Application()
    add_routes(app, health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
