from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from core import logs, metrics
from core.config import load_settings
from core.runtime import configure_logging
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini, Fault


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    yield capsys
    logging.getLogger().handlers.clear()


async def test_json_logs_carry_the_job_id_and_never_a_secret(
    tmp_path: Path, fake_gemini: FakeGemini, captured: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        tmp_path,
        fake_gemini,
        IMAGEBOT_LOG_FORMAT="json",
        SLACK_BOT_TOKEN="xoxb-known-fake-secret-123",
    )
    configure_logging(settings)
    fake_gemini.faults.append(Fault("server_error"))
    adapter = RecordingAdapter()
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox", "k"))
        await adapter.wait_for(submitted.job.id)
        logging.getLogger("test").warning("token is xoxb-known-fake-secret-123 oops")
    lines = [json.loads(line) for line in captured.readouterr().err.splitlines() if line]
    about_job = [line for line in lines if line.get("job_id") == submitted.job.id]
    messages = [line["message"] for line in about_job]
    assert any(m.startswith("queued") for m in messages), lines
    assert any("retrying" in m for m in messages)  # the client's retry line, inside the job
    assert any(m.startswith("succeeded") for m in messages)
    assert any(m.startswith("delivered") for m in messages)
    text = json.dumps(lines)
    assert "xoxb-known-fake-secret-123" not in text and logs.REDACTED in text
    assert "test-key" not in text


async def test_metrics_count_jobs_retries_latency_and_cost(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.faults.append(Fault("unavailable"))
    adapter = RecordingAdapter()
    runner = await metrics.serve(0, host="127.0.0.1")
    port = runner.addresses[0][1]
    try:
        async with running(make_settings(tmp_path, fake_gemini), adapter) as service:
            submitted = await service.submit(request("a fox --model pro", "k"))
            await adapter.wait_for(submitted.job.id)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            scraped = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await runner.cleanup()
    assert health.json() == {"ok": True}
    assert 'imagebot_jobs_total{outcome="succeeded",platform="test"}' in scraped
    assert 'imagebot_api_retries_total{reason="server"}' in scraped
    assert 'imagebot_api_request_seconds_count{status="503"}' in scraped
    assert 'imagebot_estimated_cost_usd_total{model="gemini-3-pro-image"}' in scraped


def test_text_logs_name_the_job_in_the_line(captured: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(_env_file=None)
    configure_logging(settings)
    with logs.job_context("job-123"):
        logging.getLogger("core.service").info("succeeded in 1.00s")
    line = captured.readouterr().err.strip()
    assert line.endswith("INFO core.service job=job-123 succeeded in 1.00s")
