from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import API_KEY
from tests.fakes.gemini import FakeGemini, Fault, pixel_size

REPO = Path(__file__).resolve().parents[2]
IMAGEBOT = [sys.executable, "-m", "bots.cli"]


def _env(tmp_path: Path, gemini: FakeGemini, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "IMAGEBOT_"))}
    env.update(
        GEMINI_API_KEY=API_KEY,
        GEMINI_BASE_URL=gemini.base_url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'imagebot.sqlite3'}",
        IMAGEBOT_OUTPUT_DIR=str(tmp_path / "out"),
        GEMINI_RETRY_BACKOFF_SECONDS="0.05",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return env


async def _run(args: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=env.get("RUN_DIR", str(REPO)),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_generate_writes_the_exact_bytes_at_the_asked_size_and_sends_the_spec_request(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, out, err = await _run(
        [
            *IMAGEBOT,
            "generate",
            "a red fox",
            "--ar",
            "16:9",
            "--size",
            "2K",
            "--model",
            "flash",
            "--out",
            str(tmp_path / "images"),
        ],
        _env(tmp_path, fake_gemini),
    )
    assert code == 0, err
    paths = out.split()
    assert len(paths) == 1 and Path(paths[0]).parent == tmp_path / "images"
    data = Path(paths[0]).read_bytes()
    assert data == fake_gemini.responses[0].image
    assert (
        Image.open(io.BytesIO(data)).size
        == (2752, 1536)
        == pixel_size("gemini-3.1-flash-image-preview", "16:9", "2K")
    )
    [sent] = fake_gemini.requests
    assert sent.method == "POST"
    assert sent.path == "/v1beta/models/gemini-3.1-flash-image-preview:generateContent"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["Content-Type"].startswith("application/json")
    assert sent.body == (
        b'{"contents":[{"role":"user","parts":[{"text":"a red fox"}]}],'
        b'"generationConfig":{"responseModalities":["IMAGE"],'
        b'"imageConfig":{"aspectRatio":"16:9","imageSize":"2K"}}}'
    )


async def test_generate_refuses_bad_options_before_any_api_call_in_one_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, out, err = await _run(
        [*IMAGEBOT, "generate", "a fox", "--size", "4K", "--model", "2.5-flash"],
        _env(tmp_path, fake_gemini),
    )
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "imagebot: 4K is not available on Gemini 2.5 Flash Image, which makes 1K only: "
        "try `--model flash` or `--model pro`."
    ]
    assert fake_gemini.requests == []


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        (["unavailable"] * 2, "imagebot: The image service is overloaded right now"),
        (["image_blocked"], "imagebot: The image service made a picture but withheld it"),
        (["reseller_401"], "imagebot: "),
    ],
)
async def test_generate_fails_in_exactly_one_line_after_retries_and_logs_nothing(
    tmp_path: Path, fake_gemini: FakeGemini, faults: list[str], says: str
) -> None:
    fake_gemini.faults.extend(Fault(kind) for kind in faults)
    env = _env(tmp_path, fake_gemini, GEMINI_MAX_ATTEMPTS="2")

    code, out, err = await _run([*IMAGEBOT, "generate", "a fox"], env)

    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(says)


@pytest.mark.parametrize("where", ["a-file", "a-file/inside"])
async def test_generate_that_cannot_write_its_image_says_so_in_one_line_and_ends(
    tmp_path: Path, fake_gemini: FakeGemini, where: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / where

    code, stdout, err = await _run(
        [*IMAGEBOT, "generate", "a fox", "--out", str(out)], _env(tmp_path, fake_gemini)
    )

    assert code == 1 and stdout == ""
    assert err.strip().splitlines() == [
        f"imagebot: I could not write the image into {out}: it is not a folder."
    ]
    assert len(fake_gemini.requests) == 1


async def test_generate_logs_only_when_a_log_level_is_set(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    env = _env(tmp_path, fake_gemini, IMAGEBOT_LOG_LEVEL="INFO")

    code, out, err = await _run([*IMAGEBOT, "generate", "a fox"], env)

    assert code == 0 and len(out.splitlines()) == 1
    assert "INFO core.runtime image API" in err and API_KEY not in err


async def test_generate_with_a_missing_image_file_or_key_says_so_in_one_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, _, err = await _run(
        [*IMAGEBOT, "generate", "a fox", "--image", "nope.png"], _env(tmp_path, fake_gemini)
    )
    assert code == 1 and err.strip() == "imagebot: There is no file at nope.png."
    env = _env(tmp_path, fake_gemini)
    del env["GEMINI_API_KEY"]
    env["RUN_DIR"] = str(tmp_path)  # no .env there
    code, _, err = await _run([*IMAGEBOT, "generate", "a fox"], env)
    assert code == 1 and err.strip().startswith("imagebot: GEMINI_API_KEY is not set")


async def test_a_file_that_is_not_a_database_ends_in_one_line_not_a_hang(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    notes = tmp_path / "imagebot.sqlite3"
    notes.write_bytes(b"these are notes, not a database\n" * 200)
    code, _, err = await _run([*IMAGEBOT, "generate", "a fox"], _env(tmp_path, fake_gemini))

    assert code == 1
    assert err.startswith(f"imagebot: the database at {notes} cannot be used (file is not a")
    assert "Traceback" not in err
    assert notes.read_bytes().startswith(b"these are notes")


async def test_make_run_from_a_fresh_env_file_names_doctor_and_the_offline_path(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    # what a newcomer does first: cp .env.example .env && make run
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    env = _env(tmp_path, fake_gemini)
    for name in ("GEMINI_API_KEY", "GEMINI_BASE_URL", "DATABASE_URL"):
        del env[name]
    env["RUN_DIR"] = str(tmp_path)
    code, out, err = await _run([*IMAGEBOT, "run"], env)

    assert code == 1
    assert "starting the terminal chat" in out
    [problem, hint] = err.strip().splitlines()
    assert problem.startswith("imagebot: GEMINI_API_KEY is not set")
    assert "imagebot fake-gemini" in problem and "GEMINI_BASE_URL=http://127.0.0.1:8765" in problem
    assert "`.venv/bin/imagebot doctor`" in hint


async def test_a_three_turn_chat_sends_history_with_images_and_signatures(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    reference = tmp_path / "flag.png"
    Image.new("RGB", (40, 30), "red").save(reference)
    script = (
        "a lighthouse at dusk --model pro --ar 3:2\n"
        f"/attach {reference}\n"
        "put this flag on top\n"
        "now make it night\n"
        "/quit\n"
    ).encode()
    code, out, err = await _run([*IMAGEBOT, "chat"], _env(tmp_path, fake_gemini), script)
    assert code == 0, err
    images = [
        line.removeprefix("image: ") for line in out.splitlines() if line.startswith("image: ")
    ]
    assert len(images) == 3 and all(Path(p).exists() for p in images)
    assert [r.status for r in fake_gemini.requests] == [200, 200, 200]
    third = fake_gemini.requests[2].json
    assert third is not None
    contents = third["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]

    def inline(part: dict) -> bytes:
        return base64.b64decode(part["inlineData"]["data"])

    first_image, second_image = (r.image for r in fake_gemini.responses[:2])
    [model_one] = contents[1]["parts"]
    assert inline(model_one) == first_image
    assert model_one["thoughtSignature"] in fake_gemini.responses[0].signatures
    assert contents[2]["parts"][0] == {"text": "put this flag on top"}
    assert inline(contents[2]["parts"][1]) == reference.read_bytes()
    [model_two] = contents[3]["parts"]
    assert inline(model_two) == second_image
    assert model_two["thoughtSignature"] in fake_gemini.responses[1].signatures
    assert contents[4]["parts"] == [{"text": "now make it night"}]
    assert third["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2", "imageSize": "1K"}


async def test_a_chat_over_a_small_budget_drops_the_oldest_images_and_tells_the_user(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    script = b"a lighthouse\nmake it night\nadd a moon\n"
    env = _env(tmp_path, fake_gemini, GEMINI_REQUEST_BUDGET_MB="0.06")
    code, out, err = await _run([*IMAGEBOT, "chat"], env, script)
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "left out the oldest image" in notes[0]
    assert all(r.status == 200 for r in fake_gemini.requests)


async def test_a_process_killed_mid_job_finishes_the_job_after_a_restart(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    deliveries = tmp_path / "deliveries.jsonl"
    env = _env(tmp_path, fake_gemini, IMAGEBOT_LEASE_SECONDS="0.5")
    fake_gemini.latency = 30  # the first process dies while the API is still working
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.core.crash_child",
        str(deliveries),
        "a fox",
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    await fake_gemini.wait_for_requests(1, timeout=30)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert not deliveries.exists()
    fake_gemini.latency = 0
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.core.crash_child",
        str(deliveries),
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not deliveries.exists() or not deliveries.read_text():
            assert asyncio.get_running_loop().time() < deadline, "never delivered"
            await asyncio.sleep(0.05)
    finally:
        second.terminate()
        await second.wait()
    [line] = deliveries.read_text().splitlines()
    assert json.loads(line)["images"] == 1
    with sqlite3.connect(tmp_path / "imagebot.sqlite3") as db:
        state, attempts, delivered = db.execute(
            "SELECT state, attempts, delivered_at FROM jobs"
        ).fetchone()
    assert state == "succeeded" and attempts == 2 and delivered is not None
    assert len(fake_gemini.requests) == 2


async def test_chat_attach_takes_quoted_paths_and_a_refused_image_is_not_sent_again(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    flag = tmp_path / "my flag.png"
    Image.new("RGB", (40, 30), "red").save(flag)
    script = (
        "/attach\n"
        f"/attach {notes}\n"
        "use this\n"  # refused: the attachment is no image
        "a lighthouse\n"  # goes without it
        f'/attach "{flag}"\n'
        "put this flag on top\n"
        "/quit\n"
    ).encode()

    code, out, err = await _run([*IMAGEBOT, "chat"], _env(tmp_path, fake_gemini), script)

    assert code == 0, err
    errors = [line for line in out.splitlines() if "error:" in line]
    assert errors[0].endswith("error: Give the image's path: /attach PATH")
    assert len(errors) == 2, errors  # the refused image once, not again for the lighthouse
    assert "Attached my flag.png" in out
    assert len([line for line in out.splitlines() if line.startswith("image: ")]) == 2
    sent = [r.json for r in fake_gemini.requests]
    assert all(s is not None for s in sent)
    assert not any("inlineData" in p for c in sent[0]["contents"] for p in c["parts"])  # type: ignore[index]
    assert any("inlineData" in p for p in sent[1]["contents"][-1]["parts"])  # type: ignore[index]


async def test_a_usage_error_points_at_the_right_help(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    env = _env(tmp_path, fake_gemini)

    _, _, missing = await _run([*IMAGEBOT, "generate"], env)
    _, _, unknown = await _run([*IMAGEBOT, "paint"], env)

    assert missing.strip().endswith("(see imagebot generate --help)")
    assert unknown.strip().endswith("(see imagebot --help)")


async def test_a_chat_line_with_a_byte_that_is_not_utf8_is_read_and_the_chat_goes_on(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    script = b"a red \xff fox\nnow blue\n"
    code, out, err = await _run([*IMAGEBOT, "chat"], _env(tmp_path, fake_gemini), script)

    assert code == 0, err
    assert out.count("image: ") == 2
    assert fake_gemini.requests[0].json["contents"][0]["parts"][0]["text"] == "a red \ufffd fox"
