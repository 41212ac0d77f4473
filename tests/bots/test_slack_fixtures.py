"""Real Slack payloads (tests/fixtures/slack/README.md) replayed through the real Bolt app over
signed HTTP: each one ends in what a person would notice (a job and its image in the right
place, one sentence, or nothing at all).

Every fixture is rewritten into the fake's world first (`fake_world`): the installing team, the
bot's user id, the app id, channel ids, trigger ids, response URLs and file URLs become the
fake's, so the fake can answer and host what the payload points at. One app serves the whole
module; each fixture gets channels of its own, and `settle` waits until the app has let go of
everything the fixture started.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import pytest_asyncio
from PIL import Image

from bots.slack import messages
from core.config import Settings
from tests.bots.test_slack_app import Running, _is_status_post, running
from tests.conftest import API_KEY
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack, SlackCall

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"
KINDS = {"event_callback", "slash_command", "block_actions", "view_submission", "web_api"}
# the DM file_share event of Slack's docs, the carrier of a web_api file object
FILE_SHARE_CARRIER = "docs_file_share_im_png"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _params() -> Iterator[Any]:
    for path in sorted(FIXTURES.glob("*.json")):
        doc = _load(path)
        marks = [pytest.mark.xfail(strict=True, reason=doc["xfail"])] if doc.get("xfail") else []
        yield pytest.param(path.stem, marks=marks, id=path.stem)


# ---------------------------------------------------------------- the fixtures themselves


def test_every_fixture_names_its_public_source_and_what_was_adapted() -> None:
    paths = sorted(FIXTURES.glob("*.json"))
    assert len(paths) >= 30
    readme = (FIXTURES / "README.md").read_text()
    for path in paths:
        doc = _load(path)
        assert str(doc.get("source", "")).startswith("http"), path.name
        assert doc.get("note"), path.name
        assert doc.get("kind") in KINDS, path.name
        assert doc.get("body") and doc.get("expect"), path.name
        if "github.com" in doc["source"] and "/blob/" in doc["source"]:
            commit = doc["source"].split("/blob/")[1].split("/")[0]
            assert len(commit) == 40, f"{path.name}: GitHub sources name a commit"
        assert f"`{path.name}`" in readme, f"{path.name} is missing from README.md"


# ---------------------------------------------------------------- one app for the module


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        # the module's app outlives conftest's per-test clean environment: clean it here too
        for info in Settings.model_fields.values():
            if isinstance(info.validation_alias, str):
                env.delenv(info.validation_alias, raising=False)
        async with FakeGemini(api_key=API_KEY) as gemini:
            async with running(tmp_path_factory.mktemp("slack-fixtures"), gemini) as app:
                yield app


_counter = iter(range(1, 10_000))


# ---------------------------------------------------------------- into the fake's world


@dataclass
class Replay:
    name: str
    kind: str
    body: dict[str, Any]
    expect: dict[str, Any]
    world: dict[str, Any]
    event: dict[str, Any] | None = None
    channels: set[str] = field(default_factory=set)
    job_id: str | None = None  # the bot's earlier result a click or a form is about


def _installing_team(kind: str, body: dict[str, Any]) -> str | None:
    if kind == "slash_command":
        return body.get("team_id")
    if kind in ("block_actions", "view_submission"):
        view = body.get("view") or {}
        return view.get("app_installed_team_id") or (body.get("team") or {}).get("id")
    authorizations = body.get("authorizations") or []
    if authorizations:
        return authorizations[0].get("team_id")
    return body.get("team_id")


def _bot_user(body: dict[str, Any], world: dict[str, Any]) -> str | None:
    authorizations = body.get("authorizations") or []
    return world.get("bot_user") or (authorizations[0].get("user_id") if authorizations else None)


def _channels(kind: str, body: dict[str, Any]) -> set[str]:
    if kind == "slash_command":
        return {body["channel_id"]} if body.get("channel_id") else set()
    event = body.get("event") or {}
    return {event[key] for key in ("channel",) if isinstance(event.get(key), str)}


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    """Every identifier of the payload's world replaced by the fake's, mentions included."""
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        for old, new in ids.items():
            value = value.replace(f"<@{old}>", f"<@{new}>").replace(f"<@{old}|", f"<@{new}|")
        return value
    return value


def _image_bytes(mimetype: str) -> bytes:
    formats = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
    if mimetype == "image/heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        formats[mimetype] = "HEIF"
    if mimetype not in formats:
        return b"test test test"
    out = io.BytesIO()
    Image.new("RGB", (48, 32), (30, 120, 200)).save(out, format=formats[mimetype])
    return out.getvalue()


def _host_files(files: list[dict[str, Any]], fake: FakeSlack, world: dict[str, Any]) -> None:
    """Files with URLs are hosted by the fake and point there; a Slack Connect stub gets the
    fake's file id, and files.info answers for it with the real answer `world` names."""
    for file in files:
        answer = world.get("files.info")
        if file.get("file_access") == "check_file_info" and answer:
            real = copy.deepcopy(_load(FIXTURES / f"{answer}.json")["body"]["file"])
            info = fake.add_file(
                _image_bytes(real["mimetype"]), name=real["name"], mimetype=real["mimetype"]
            )
            hosted = {k: info[k] for k in ("id", "url_private", "url_private_download")}
            info.clear()  # the fake now answers files.info with Slack's real answer
            info.update(real, **hosted)
            file["id"] = info["id"]
        elif file.get("url_private") or file.get("url_private_download"):
            mimetype = str(file.get("mimetype") or "application/octet-stream")
            info = fake.add_file(
                _image_bytes(mimetype), name=str(file.get("name") or "file"), mimetype=mimetype
            )
            file["id"] = info["id"]
            for key in ("url_private", "url_private_download"):
                if key in file:
                    file[key] = info[key]


def fake_world(name: str, fake: FakeSlack) -> Replay:
    """The fixture's payload with its identifiers turned into the fake's."""
    doc = _load(FIXTURES / f"{name}.json")
    kind, world, number = doc["kind"], dict(doc.get("world") or {}), next(_counter)
    body: Any = copy.deepcopy(doc["body"])
    if kind == "web_api":  # a file object as Slack puts it in a DM file_share event
        carrier = copy.deepcopy(_load(FIXTURES / f"{FILE_SHARE_CARRIER}.json")["body"])
        carrier["files"] = [body["file"]]
        kind, body = "event_callback", carrier
    if kind == "slash_command":
        body = dict(parse_qsl(body, keep_blank_values=True))
    if kind == "event_callback" and body.get("type") not in ("event_callback", "url_verification"):
        body = fake.event_payload(body)  # a bare event, as a docs page or model test shows it
    ids: dict[str, str] = {}
    team = _installing_team(kind, body)
    if team:
        ids[team] = fake.team_id
    bot = _bot_user(body, world)
    if bot:
        ids[bot] = fake.bot_user_id
    if body.get("api_app_id"):
        ids[body["api_app_id"]] = fake.app_id
    originals = _channels(kind, body)
    for channel in originals:  # the same C/D/G kind of conversation, one of this fixture's own
        ids[channel] = f"{channel[0]}FX{number:03d}{channel[1:]}"
    body = _substitute(body, ids)
    replay = Replay(name, kind, body, doc["expect"], world, channels={ids[c] for c in originals})
    if kind == "event_callback" and "event" in body:
        body["event_id"] = f"EvFX{number:06d}"
        replay.event = body["event"]
        _host_files(body["event"].get("files") or [], fake, world)
    if kind == "slash_command":
        issued = fake.slash_command_payload(
            "", user_id=body["user_id"], channel_id=body["channel_id"]
        )
        for key in ("response_url", "trigger_id"):
            if key in body:
                body[key] = issued[key]
    return replay


async def _earlier_result(slack: Running, replay: Replay) -> tuple[str, str]:
    """The bot's result a click or an Edit form is about, made first in a channel of its own."""
    channel = f"CFXRESULT{next(_counter):03d}"
    posted = [c for c in slack.fake.calls_to("chat.postMessage") if _is_status_post(c)]
    await slack.command("a lighthouse at dusk", channel=channel)
    status = await slack.status_posted(count=len(posted) + 1)
    await slack.final(status)
    replay.job_id = slack.button(status, messages.REROLL)["value"]
    replay.channels.add(channel)
    return status


async def _point_at_result(slack: Running, replay: Replay) -> None:
    channel, ts = await _earlier_result(slack, replay)
    body, fake = replay.body, slack.fake
    issued = fake.block_action_payload(
        messages.REROLL, user_id=body["user"]["id"], channel_id=channel, message_ts=ts
    )
    if replay.kind == "block_actions":
        body["actions"][0].update(action_id=replay.world["action"], value=replay.job_id)
        body["container"].update(channel_id=channel, message_ts=ts)
        body["channel"] = {**(body.get("channel") or {}), "id": channel}
        body["response_url"] = issued["response_url"]
    else:  # the bot's Edit form, as submitted
        view = body["view"]
        [(block, element)] = view["state"]["values"].items()
        view["state"]["values"] = {messages.EDIT_BLOCK: element}
        view.update(
            id=f"VFX{next(_counter):06d}",
            callback_id=messages.EDIT_CALLBACK,
            private_metadata=replay.job_id,
        )
        assert block
    body["trigger_id"] = issued["trigger_id"]


def _encoded(replay: Replay) -> tuple[bytes, str]:
    if replay.kind == "slash_command":
        return urlencode(replay.body).encode(), "application/x-www-form-urlencoded"
    if replay.kind in ("block_actions", "view_submission"):
        form = {"payload": json.dumps(replay.body)}
        return urlencode(form).encode(), "application/x-www-form-urlencoded"
    return json.dumps(replay.body).encode(), "application/json"


# ---------------------------------------------------------------- what a person notices


@dataclass
class Seen:
    status: int
    body: bytes
    statuses: list[tuple[str, str]]
    calls: list[SlackCall]
    response_posts: list[dict[str, Any]]
    gemini_requests: int

    def texts(self) -> list[str]:
        said = [
            str(c.params.get("text") or "") + json.dumps(c.params.get("blocks") or "")
            for c in self.calls
            if c.method in ("chat.postMessage", "chat.postEphemeral", "chat.update")
        ]
        said += [json.dumps(p["body"]) for p in self.response_posts]
        return [*said, self.body.decode(errors="replace")]


async def settle(slack: Running, calls_before: int) -> list[tuple[str, str]]:
    """Waits until the app holds no request and runs no handler (its spawned tasks: the
    one place that knows a handler is still between storing a job and posting its status),
    then until every job it started has been delivered."""
    async with asyncio.timeout(20):
        while True:
            if not slack.app.ctx._tasks and not (await slack.service.store.counts())["intake"]:
                break
            await asyncio.sleep(0.01)
    statuses = [
        (c.response["channel"], c.response["ts"])
        for c in slack.fake.calls[calls_before:]
        if c.method == "chat.postMessage" and _is_status_post(c)
    ]
    for status in statuses:
        await slack.final(status)
    return statuses


async def replay_fixture(slack: Running, name: str) -> tuple[Replay, Seen]:
    fake = slack.fake
    replay = fake_world(name, fake)
    if replay.kind in ("block_actions", "view_submission"):
        await _point_at_result(slack, replay)
    for method, error in (replay.world.get("fail") or {}).items():
        fake.fail_next(method, error=error)
    calls_before, posts_before = len(fake.calls), len(fake.response_url_posts)
    gemini_before = len(slack.gemini.requests)
    jobs_before = await slack.job_count()
    status, body, _ = await slack.post(_encoded(replay))
    statuses = await settle(slack, calls_before)
    seen = Seen(
        status,
        body,
        statuses,
        fake.calls[calls_before:],
        fake.response_url_posts[posts_before:],
        len(slack.gemini.requests) - gemini_before,
    )
    replay.expect = {**replay.expect, "_jobs": await slack.job_count() - jobs_before}
    return replay, seen


def _reference_images(slack: Running) -> int:
    request = slack.gemini.requests[-1].json
    assert request is not None
    parts = request["contents"][-1]["parts"]
    return sum(1 for part in parts if "inlineData" in part or "inline_data" in part)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", list(_params()))
async def test_a_real_payload_does_what_a_person_expects(slack: Running, name: str) -> None:
    replay, seen = await replay_fixture(slack, name)
    expect, new_jobs = replay.expect, replay.expect["_jobs"]
    assert seen.status == 200, seen.body
    fake = slack.fake

    if expect.get("challenge"):
        assert replay.body["challenge"] in seen.body.decode()
    if expect.get("ignored"):
        assert new_jobs == 0 and not seen.statuses and not seen.gemini_requests
        noticed = [
            c.method
            for c in seen.calls
            if c.method in ("chat.postMessage", "chat.postEphemeral", "views.open")
        ]
        assert not noticed and not seen.response_posts, noticed
    if expect.get("no_job"):
        assert new_jobs == 0 and not seen.statuses
    if expect.get("home"):
        user = replay.body["event"]["user"]
        home = await fake.wait_until(lambda: fake.home_views.get(user))
        assert home["type"] == "home" and home["blocks"]
        assert not [c for c in seen.calls if c.method == "chat.postMessage"]
    texts = "\n".join(seen.texts())
    if expect.get("reply"):
        assert any(c.method != "chat.update" for c in seen.calls) or seen.response_posts, texts
    if "reply_contains" in expect:
        assert expect["reply_contains"] in texts
    if "reply_not_contains" in expect:
        assert expect["reply_not_contains"] not in texts

    wanted = expect.get("job")
    if wanted is None:
        return
    assert new_jobs == 1 and len(seen.statuses) == 1, texts
    [status] = seen.statuses
    job = await slack.service.job_for_message("slack", fake.team_id, f"{status[0]}:{status[1]}")
    assert job is not None and job.delivered_at is not None
    shown = fake.messages[status]
    assert ":white_check_mark:" in shown["text"], shown["text"]
    if "kind" in wanted:
        assert job.kind == wanted["kind"]
    if "prompt" in wanted:
        assert wanted["prompt"] in job.prompt
    if replay.event is not None:
        # the status message and the image land where the conversation is
        event, thread = replay.event, wanted["thread"]
        assert status[0] == event["channel"]
        expected_thread = {"ts": event["ts"], "thread_ts": event.get("thread_ts"), None: None}
        assert shown.get("thread_ts") == expected_thread[thread]
    elif wanted.get("thread") == "status":
        assert status[0] in replay.channels and not shown.get("thread_ts")
    results_thread = shown.get("thread_ts") or (status[1] if status[0][0] != "D" else None)
    assert any((u.channel, u.thread_ts) == (status[0], results_thread) for u in fake.uploads), (
        "the image did not land in the conversation"
    )
    if "reference_images" in expect:
        assert _reference_images(slack) == expect["reference_images"]
