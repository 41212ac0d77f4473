"""Allow and deny lists: the pure decision, reading them from settings, and a denial end to end."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from bots.discord.access import AccessLists, Place, is_allowed
from core.config import ConfigError, Settings
from tests.bots.test_discord_harness import (
    USER,
    assert_every_interaction_answered_in_time,
    discord_server,
    running_bot,
)
from tests.fakes.discord import FLAG_EPHEMERAL
from tests.fakes.gemini import FakeGemini

GUILD, CHANNEL, THREAD, ROLE, ALICE, BOB = 1, 10, 11, 100, 1000, 2000


def _lists(**ids: set[int]) -> AccessLists:
    return AccessLists(**{name: frozenset(values) for name, values in ids.items()})


def _place(user: int = ALICE, *, roles: Iterable[int] = (), **where: int | None) -> Place:
    values: dict[str, int | None] = {"guild_id": GUILD, "channel_id": CHANNEL, **where}
    return Place(user_id=user, role_ids=frozenset(roles), **values)  # type: ignore[arg-type]


def test_with_no_lists_everyone_is_allowed_everywhere() -> None:
    assert is_allowed(AccessLists(), _place())
    assert is_allowed(AccessLists(), _place(guild_id=None))


def test_a_denied_user_or_role_is_refused_even_when_also_allowed() -> None:
    lists = _lists(allowed_users={ALICE}, denied_users={ALICE}, denied_roles={ROLE})
    assert not is_allowed(lists, _place(ALICE))
    assert not is_allowed(_lists(denied_roles={ROLE}), _place(BOB, roles={ROLE}))
    assert not is_allowed(_lists(denied_users={ALICE}), _place(ALICE, guild_id=None))


def test_allowed_guilds_and_channels_limit_where_and_a_thread_counts_as_its_channel() -> None:
    assert not is_allowed(_lists(allowed_guilds={2}), _place())
    assert is_allowed(_lists(allowed_guilds={GUILD}), _place())
    assert not is_allowed(_lists(allowed_channels={99}), _place())
    lists = _lists(allowed_channels={CHANNEL})
    assert is_allowed(lists, _place(channel_id=THREAD, parent_channel_id=CHANNEL))
    assert not is_allowed(lists, _place(channel_id=THREAD, parent_channel_id=99))


def test_allowed_users_and_roles_let_in_either() -> None:
    lists = _lists(allowed_users={ALICE}, allowed_roles={ROLE})
    assert is_allowed(lists, _place(ALICE))
    assert is_allowed(lists, _place(BOB, roles={ROLE}))
    assert not is_allowed(lists, _place(BOB, roles={7}))


def test_a_dm_gets_around_no_guild_channel_or_role_list() -> None:
    assert not is_allowed(_lists(allowed_guilds={GUILD}), _place(guild_id=None))
    assert not is_allowed(_lists(allowed_roles={ROLE}), _place(roles={ROLE}, guild_id=None))
    assert is_allowed(
        _lists(allowed_guilds={GUILD}, allowed_users={ALICE}), _place(ALICE, guild_id=None)
    )
    assert not is_allowed(_lists(allowed_users={ALICE}), _place(BOB, guild_id=None))


def test_lists_are_read_from_settings_and_a_bad_id_names_the_variable() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        DISCORD_ALLOWED_GUILDS="1, 2",
        DISCORD_DENIED_ROLES="100",
    )
    lists = AccessLists.from_settings(settings)
    assert lists.allowed_guilds == {1, 2} and lists.denied_roles == {100}
    assert lists.allowed_users == frozenset()

    bad = Settings(_env_file=None, DISCORD_DENIED_USERS="alice")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="DISCORD_DENIED_USERS must list numeric Discord ids"):
        AccessLists.from_settings(bad)


async def test_a_denied_user_is_refused_privately_on_commands_and_ignored_on_mentions(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_DENIED_USERS=str(USER)) as bot,
    ):
        refused = await bot.callback(await bot.slash({"prompt": "a cat"}))
        await bot.say("a cat, please")
        # someone else's mention afterwards is answered, so the first one was seen and dropped
        await bot.reply_to(await bot.say("a dog", user=USER + 1))

    assert refused.json["type"] == 4 and refused.json["data"]["flags"] & FLAG_EPHEMERAL
    assert refused.json["data"]["content"] == "⚠️ You are not allowed to use imagebot here."
    assert len(fake_gemini.requests) == 1
    bot_messages = [m for m in fake.channel_messages() if m.author_id == fake.bot_user_id]
    assert len([m for m in bot_messages if not m.ephemeral]) == 1
    assert_every_interaction_answered_in_time(fake)
