"""Defaults for a whole workspace or server and for one channel, under each person's own:
the person's win over the channel's, the channel's over the workspace's."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserFacingError
from core.options import Options
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import FakeGemini


def _config(fake: FakeGemini, index: int) -> dict:
    body = fake.requests[index].json
    return dict(body["generationConfig"].get("imageConfig", {}))


async def test_person_over_channel_over_team_and_typed_over_all(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        await service.set_shared_defaults(
            "test", "T1", None, Options(size="2K", aspect_ratio="4:3"), "ADMIN"
        )
        await service.set_shared_defaults(
            "test", "T1", "C1", Options(aspect_ratio="16:9", n=2), "ADMIN"
        )
        await service.set_user_defaults("test", "T1", "U2", Options(aspect_ratio="3:2"))
        asked = [
            ("U1", "C1", "a fox"),  # the channel's ratio and n, the team's size
            ("U1", "C2", "a fox"),  # the team's alone
            ("U2", "C1", "a fox"),  # their own ratio over the channel's
            ("U1", "C1", "a fox --size 1K --ar 1:1 --n 1"),  # typed wins over every layer
        ]
        jobs = []
        for number, (user, channel, text) in enumerate(asked):
            submitted = await service.submit(
                request(text, f"k{number}", user_id=user, channel=channel)
            )
            jobs.append(await delivered(service, submitted.job.id))
        layers = await service.defaults("test", "T1", "U2", "C1")

    assert [(j.options.aspect_ratio, j.options.size, j.options.n) for j in jobs] == [
        ("16:9", "2K", 2),
        ("4:3", "2K", None),
        ("3:2", "2K", 2),
        ("1:1", "1K", None),
    ]
    assert len(fake_gemini.requests) == 2 + 1 + 2 + 1
    assert layers.team == Options(size="2K", aspect_ratio="4:3")
    assert layers.channel == Options(aspect_ratio="16:9", n=2)
    assert layers.effective == Options(size="2K", aspect_ratio="3:2", n=2)


async def test_shared_defaults_are_checked_and_an_empty_set_clears_them(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(make_settings(tmp_path, fake_gemini), RecordingAdapter()) as service:
        with pytest.raises(UserFacingError) as caught:
            await service.set_shared_defaults(
                "test", "T1", None, Options(model="2.5-flash", size="4K"), "ADMIN"
            )
        saved = await service.set_shared_defaults("test", "T1", "C1", Options(model="pro"), "A")
        before = await service.defaults("test", "T1", "U1", "C1")
        await service.set_shared_defaults("test", "T1", "C1", Options(), "A")
        after = await service.defaults("test", "T1", "U1", "C1")
        elsewhere = await service.defaults("test", "T2", "U1", "C1")
    assert caught.value.message.startswith("4K is not available on Gemini 2.5 Flash Image")
    assert saved.model == before.channel.model == "gemini-3-pro-image"
    assert after.channel == Options() and elsewhere.channel == Options()
