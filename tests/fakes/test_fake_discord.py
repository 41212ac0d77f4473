"""Real discord.py 2.7 runs unmodified against the Discord fake: login, events, commands, buttons,
modals, RESUME with replay, rate limits and upload limits."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakes.discord import FakeDiscord

USER_ID = 5000


def _png(width: int = 8, height: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


class Inbox:
    """Things a client callback saw, with an event to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def put(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, count: int = 1) -> list[Any]:
        async with asyncio.timeout(5):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


class QuickClient(discord.Client):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before a second IDENTIFY; nothing to protect here."""


def _client(*, message_content: bool = False) -> discord.Client:
    intents = discord.Intents.default()  # guilds and guild messages included
    intents.message_content = message_content
    # the only guild arrives right after READY, so on_ready need not wait 2 s for more
    return QuickClient(intents=intents, guild_ready_timeout=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        restore = server.point_discord_py_here()
        try:
            yield server
        finally:
            restore()
        assert server.errors == []


@contextlib.asynccontextmanager
async def running(client: discord.Client, fake: FakeDiscord) -> AsyncIterator[discord.Client]:
    task = asyncio.create_task(client.start(fake.token))

    async def ready() -> None:
        await fake.wait_until_ready()
        await client.wait_until_ready()

    waiter = asyncio.create_task(ready())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
            raise AssertionError("the client stopped before it was ready")
        if waiter not in done:
            raise TimeoutError("the client did not become ready")
        yield client
    finally:
        waiter.cancel()
        await client.close()
        await asyncio.gather(task, waiter, return_exceptions=True)


def _guild(fake: FakeDiscord) -> discord.Object:
    return discord.Object(id=fake.guild_id)


async def test_client_logs_in_and_sees_the_guild_its_channel_and_its_permissions(
    fake: FakeDiscord,
) -> None:
    client = _client()
    async with running(client, fake):
        guild = client.get_guild(fake.guild_id)
        assert guild is not None and guild.name == "Test Guild"
        channel = guild.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)
        permissions = channel.permissions_for(guild.me)
        assert permissions.send_messages and permissions.attach_files
        assert permissions.create_public_threads and permissions.send_messages_in_threads
        assert client.user is not None and client.user.id == fake.bot_user_id
        assert client.application_id == fake.application_id
        intents = client.intents.value

    assert fake.identifies == 1 and fake.intents == intents
    login = fake.calls_to("GET", "/users/@me") + fake.calls_to("GET", "/oauth2/applications/@me")
    assert [c.status for c in login] == [200, 200]
    assert all(c.headers["Authorization"] == f"Bot {fake.token}" for c in login)


async def test_a_wrong_token_is_refused_at_login(fake: FakeDiscord) -> None:
    client = _client()
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()

    assert fake.calls_to("GET", "/users/@me")[0].status == 401


async def test_a_user_message_reaches_on_message_and_its_attachment_downloads_from_the_cdn(
    fake: FakeDiscord,
) -> None:
    client = _client(message_content=True)
    inbox = Inbox()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.id == USER_ID:
            inbox.put(message)

    png = _png()
    async with running(client, fake):
        upload = fake.add_attachment(png, "cat photo.png")
        event = fake.message_create("hello", author_id=USER_ID, attachments=[upload])
        await fake.dispatch("MESSAGE_CREATE", event)

        [message] = await inbox.wait_for(1)
        assert message.content == "hello"
        assert isinstance(message.channel, discord.TextChannel)
        assert isinstance(message.author, discord.Member)
        [attachment] = message.attachments
        assert attachment.filename == "cat_photo.png"
        assert attachment.content_type == "image/png"
        assert (attachment.width, attachment.height) == (8, 6)
        assert await attachment.read() == png


async def test_without_the_message_content_intent_only_mentions_of_the_bot_carry_text(
    fake: FakeDiscord,
) -> None:
    client = _client(message_content=False)
    inbox = Inbox()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.id == USER_ID:
            inbox.put(message)

    async with running(client, fake):
        chatter = fake.message_create("just chatting", author_id=USER_ID)
        mention = fake.message_create(
            f"<@{fake.bot_user_id}> draw a cat", author_id=USER_ID, mentions=[fake.bot_user_id]
        )
        await fake.dispatch("MESSAGE_CREATE", chatter)
        await fake.dispatch("MESSAGE_CREATE", mention)

        first, second = await inbox.wait_for(2)
        assert first.content == ""
        assert second.content.endswith("draw a cat") and client.user in second.mentions


async def test_a_reply_to_a_bot_image_carries_the_message_it_replies_to(
    fake: FakeDiscord,
) -> None:
    client = _client(message_content=True)
    inbox = Inbox()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.id == USER_ID:
            inbox.put(message)

    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)
        image = await channel.send(file=discord.File(io.BytesIO(_png()), "image.png"))
        reply = fake.message_create("now at night", author_id=USER_ID, message_reference=image.id)
        await fake.dispatch("MESSAGE_CREATE", reply)

        [message] = await inbox.wait_for(1)
        assert message.reference is not None and message.reference.message_id == image.id
        resolved = message.reference.resolved
        assert isinstance(resolved, discord.Message) and resolved.author == client.user
        assert resolved.attachments[0].filename == "image.png"


async def test_a_slash_command_defers_within_three_seconds_and_edits_the_original_with_a_file(
    fake: FakeDiscord,
) -> None:
    client = _client()
    tree = app_commands.CommandTree(client)
    received = Inbox()
    result_png, reference_png = _png(16, 9), _png(4, 4)

    @tree.command(name="imagine", description="Draw a picture", guild=_guild(fake))
    async def imagine(
        interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None
    ) -> None:
        await interaction.response.defer(thinking=True)
        received.put((prompt, await image.read() if image else b""))
        await interaction.edit_original_response(
            content=f"**{prompt}**",
            attachments=[discord.File(io.BytesIO(result_png), "image.png")],
        )

    async with running(client, fake):
        await tree.sync(guild=_guild(fake))
        apps = f"/applications/{fake.application_id}"
        [registered] = fake.calls_to("PUT", rf"{apps}/guilds/{fake.guild_id}/commands")
        assert registered.json[0]["name"] == "imagine"

        reference = fake.add_attachment(reference_png, "reference.png")
        interaction = fake.interaction_slash_command(
            "imagine",
            [{"name": "prompt", "type": 3, "value": "a lighthouse"}],
            user_id=USER_ID,
            attachments={"image": reference},
        )
        await fake.dispatch("INTERACTION_CREATE", interaction)

        deferred = await fake.wait_for_call(
            "POST", rf"/interactions/{interaction['id']}/[^/]+/callback"
        )
        assert deferred.status == 200 and deferred.json == {"type": 5}
        assert deferred.since_dispatch is not None and deferred.since_dispatch < 3

        edit = await fake.wait_for_call(
            "PATCH", rf"/webhooks/{fake.application_id}/[^/]+/messages/@original"
        )
        assert edit.status == 200
        [upload] = edit.files
        assert upload.filename == "image.png" and upload.data == result_png
        assert received.items == [("a lighthouse", reference_png)]

        [shown] = [m for m in fake.channel_messages() if m.interaction_metadata]
        assert not shown.loading and shown.content == "**a lighthouse**"
        [stored] = shown.attachments
        assert stored.data == result_png and stored.content_type == "image/png"
        assert (stored.width, stored.height) == (16, 9)


async def test_an_interaction_is_answered_once_and_only_before_its_deadline(
    fake: FakeDiscord,
) -> None:
    def callback_url(interaction: dict[str, Any]) -> str:
        return (
            f"{fake.api_url}/interactions/{interaction['id']}/{interaction['token']}"
            "/callback?with_response=true"
        )

    async with aiohttp.ClientSession() as http:
        interaction = fake.interaction_slash_command("imagine", user_id=USER_ID)
        async with http.post(callback_url(interaction), json={"type": 5}) as first:
            assert first.status == 200 and first.headers["Content-Type"] == "application/json"
            body = await first.json()
        assert body["interaction"]["response_message_loading"] is True
        assert body["resource"]["type"] == 5 and body["resource"]["message"]["flags"] == 128

        again = {"type": 4, "data": {"content": "again"}}
        async with http.post(callback_url(interaction), json=again) as second:
            assert second.status == 400 and (await second.json())["code"] == 40060

        fake.interaction_ttl = 0.0
        late = fake.interaction_slash_command("imagine", user_id=USER_ID)
        async with http.post(callback_url(late), json={"type": 5}) as expired:
            assert expired.status == 404 and (await expired.json())["code"] == 10062


async def test_a_persistent_dynamic_button_click_reaches_its_callback(fake: FakeDiscord) -> None:
    clicks = Inbox()

    class Reroll(discord.ui.DynamicItem[discord.ui.Button], template=r"reroll:(?P<job>\d+)"):
        def __init__(self, job: int) -> None:
            super().__init__(discord.ui.Button(label="Re-roll", custom_id=f"reroll:{job}"))
            self.job = job

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
        ) -> Reroll:
            return cls(int(match["job"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            clicks.put(self.job)
            await interaction.edit_original_response(content="re-rolling")

    client = _client()
    client.add_dynamic_items(Reroll)
    async with running(client, fake):
        # posted before this client started, so only the custom_id template can route the click
        button = {"type": 2, "style": 2, "label": "Re-roll", "custom_id": "reroll:42"}
        earlier = fake.add_bot_message(
            "a lighthouse", components=[{"type": 1, "components": [button]}]
        )
        click = fake.interaction_component("reroll:42", earlier, user_id=USER_ID)
        await fake.dispatch("INTERACTION_CREATE", click)

        assert await clicks.wait_for(1) == [42]
        deferred = await fake.wait_for_call("POST", rf"/interactions/{click['id']}/[^/]+/callback")
        assert deferred.json == {"type": 6} and deferred.status == 200
        await fake.wait_for_call(
            "PATCH", rf"/webhooks/{fake.application_id}/[^/]+/messages/@original"
        )
        assert fake.message(earlier.id).content == "re-rolling"


async def test_a_modal_opened_by_a_command_delivers_its_values_to_on_submit(
    fake: FakeDiscord,
) -> None:
    submitted = Inbox()

    class Describe(discord.ui.Modal, title="Describe the picture"):
        prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt")
        size = discord.ui.Label(text="Size", component=discord.ui.TextInput(custom_id="size"))

        async def on_submit(self, interaction: discord.Interaction) -> None:
            size = self.size.component
            assert isinstance(size, discord.ui.TextInput)
            submitted.put((self.prompt.value, size.value))
            await interaction.response.send_message("Queued", ephemeral=True)

    client = _client()
    tree = app_commands.CommandTree(client)

    @tree.command(name="describe", description="Describe a picture", guild=_guild(fake))
    async def describe(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Describe())

    async with running(client, fake):
        await tree.sync(guild=_guild(fake))
        command = fake.interaction_slash_command("describe", user_id=USER_ID)
        await fake.dispatch("INTERACTION_CREATE", command)
        opened = await fake.wait_for_call("POST", rf"/interactions/{command['id']}/[^/]+/callback")
        assert opened.json["type"] == 9

        submit = fake.interaction_modal_submit(
            opened.json["data"]["custom_id"], {"prompt": "a fox", "size": "2K"}, user_id=USER_ID
        )
        await fake.dispatch("INTERACTION_CREATE", submit)

        assert await submitted.wait_for(1) == [("a fox", "2K")]
        answered = await fake.wait_for_call("POST", rf"/interactions/{submit['id']}/[^/]+/callback")
        assert answered.json["type"] == 4
        reply = await fake.wait_for_message(lambda m: m.content == "Queued")
        assert reply.ephemeral


async def test_reconnect_resumes_the_session_and_replays_gap_events_exactly_once(
    fake: FakeDiscord,
) -> None:
    client = _client(message_content=True)
    inbox = Inbox()
    resumed = Inbox()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.id == USER_ID:
            inbox.put(message.content)

    @client.event
    async def on_resumed() -> None:
        resumed.put(True)

    async with running(client, fake):
        await fake.send_reconnect()
        gap = [
            await fake.dispatch("MESSAGE_CREATE", fake.message_create(text, author_id=USER_ID))
            for text in ("gap 1", "gap 2")
        ]
        await fake.wait_for_resume()
        await fake.dispatch("MESSAGE_CREATE", fake.message_create("after", author_id=USER_ID))

        # events keep their order on the socket, so a duplicate would arrive before "after"
        assert await inbox.wait_for(3) == ["gap 1", "gap 2", "after"]
        assert [event.seq for event in fake.replayed] == gap
        assert (fake.connections, fake.identifies, fake.resumes) == (2, 1, 1)
        await resumed.wait_for(1)


async def test_a_dropped_connection_resumes_and_an_invalidated_session_identifies_again(
    fake: FakeDiscord,
) -> None:
    client = _client()
    async with running(client, fake):
        await fake.drop_connection()
        await fake.wait_for_resume()
        assert (fake.identifies, fake.resumes) == (1, 1)

        await fake.invalidate_session()
        await fake.wait_until_ready()
        assert (fake.identifies, fake.resumes, fake.connections) == (2, 1, 3)


async def test_a_thread_started_from_a_bot_message_routes_replies_as_a_thread(
    fake: FakeDiscord,
) -> None:
    client = _client(message_content=True)
    inbox = Inbox()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author.id == USER_ID:
            inbox.put(message)

    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)
        root = await channel.send("a lighthouse")
        thread = await root.create_thread(name="a lighthouse")
        assert thread.id == root.id
        await fake.dispatch(
            "MESSAGE_CREATE",
            fake.message_create("make it night", author_id=USER_ID, channel_id=thread.id),
        )

        [reply] = await inbox.wait_for(1)
        assert isinstance(reply.channel, discord.Thread)
        assert reply.channel.parent_id == fake.channel_id
        assert reply.channel.owner_id == fake.bot_user_id
        await reply.channel.send("night", file=discord.File(io.BytesIO(_png()), "night.png"))
        [night] = [m for m in fake.channel_messages(thread.id) if m.author_id == fake.bot_user_id]
        assert night.attachments[0].filename == "night.png"


async def test_a_rate_limited_message_is_retried_by_discord_py_and_lands_once(
    fake: FakeDiscord,
) -> None:
    client = _client()
    async with running(client, fake):
        messages_path = rf"/channels/{fake.channel_id}/messages"
        fake.fail_next("POST", messages_path, status=429, retry_after=0.05)
        channel = client.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)

        sent = await channel.send("hello")

        assert [c.status for c in fake.calls_to("POST", messages_path)] == [429, 200]
        assert [(m.id, m.content) for m in fake.channel_messages()] == [(sent.id, "hello")]


async def test_a_file_over_the_upload_limit_is_refused_with_413(fake: FakeDiscord) -> None:
    client = _client()
    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)
        too_big = discord.File(io.BytesIO(b"\0" * (fake.upload_limit_bytes + 1)), "big.png")

        with pytest.raises(discord.HTTPException) as refused:
            await channel.send(file=too_big)

        assert refused.value.status == 413 and refused.value.code == 40005
        assert fake.channel_messages() == []


# sharding -----------------------------------------------------------------------------------


async def _identify(
    http: aiohttp.ClientSession, fake: FakeDiscord, shard: list[int]
) -> aiohttp.ClientWebSocketResponse:
    """A raw gateway connection that identified as `shard`."""
    ws = await http.ws_connect(fake.gateway_url)
    hello = await ws.receive_json(timeout=5)
    assert hello["op"] == 10
    identify = {"token": fake.token, "intents": 1 | 1 << 9 | 1 << 12, "shard": shard}
    await ws.send_json({"op": 2, "d": {**identify, "properties": {}}})
    return ws


async def _dispatches_until(
    ws: aiohttp.ClientWebSocketResponse, last_type: str
) -> list[dict[str, Any]]:
    """Every dispatch on the connection up to and including the first of type `last_type`;
    frames keep their order, so what is not here before it was never sent."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["t"] != last_type:
        frame = await ws.receive_json(timeout=5)
        if frame["op"] == 0:
            seen.append(frame)
    return seen


async def test_each_shard_gets_its_own_guilds_and_dms_go_to_shard_zero() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        second = fake.add_guild("Second", shard=(1, 2))
        assert (fake.guild_id >> 22) % 2 == 0 and (second.id >> 22) % 2 == 1
        zero = await _identify(http, fake, [0, 2])
        one = await _identify(http, fake, [1, 2])
        ready_zero = await _dispatches_until(zero, "GUILD_CREATE")
        ready_one = await _dispatches_until(one, "GUILD_CREATE")
        await fake.wait_until_ready()
        assert fake.live_shards() == [(0, 2), (1, 2)]

        # READY lists only the shard's guilds, says which shard it is, and its GUILD_CREATE follows
        assert [f["t"] for f in ready_zero] == ["READY", "GUILD_CREATE"]
        assert ready_zero[0]["d"]["shard"] == [0, 2]
        assert [g["id"] for g in ready_zero[0]["d"]["guilds"]] == [str(fake.guild_id)]
        assert ready_zero[1]["d"]["id"] == str(fake.guild_id)
        assert ready_one[0]["d"]["shard"] == [1, 2]
        assert [g["id"] for g in ready_one[0]["d"]["guilds"]] == [str(second.id)]
        [channel] = ready_one[1]["d"]["channels"]
        assert channel["id"] == str(second.channel_id) and channel["guild_id"] == str(second.id)

        in_first = fake.message_create("first", author_id=USER_ID)
        in_second = fake.message_create("second", author_id=USER_ID, channel_id=second.channel_id)
        dm = fake.message_create("dm", author_id=USER_ID, channel_id=fake.add_dm_channel(USER_ID))
        command = fake.interaction_slash_command(
            "imagine", user_id=USER_ID, channel_id=second.channel_id
        )
        for event_type, data in [
            ("MESSAGE_CREATE", in_first),
            ("MESSAGE_CREATE", in_second),
            ("MESSAGE_CREATE", dm),
            ("INTERACTION_CREATE", command),
        ]:
            await fake.dispatch(event_type, data)
        # one last event per shard: anything else routed to a shard arrives before it
        for guild_id in (fake.guild_id, second.id):
            await fake.dispatch("GUILD_UPDATE", {"id": str(guild_id)})

        got_zero = await _dispatches_until(zero, "GUILD_UPDATE")
        got_one = await _dispatches_until(one, "GUILD_UPDATE")
        assert [f["d"]["id"] for f in got_zero[:-1]] == [in_first["id"], dm["id"]]
        assert [(f["t"], f["d"]["id"]) for f in got_one[:-1]] == [
            ("MESSAGE_CREATE", in_second["id"]),
            ("INTERACTION_CREATE", command["id"]),
        ]
        assert command["guild_id"] == str(second.id)
        routed = [(e.type, e.shard) for e in fake.events if e.type != "GUILD_CREATE"]
        assert routed[-6:] == [
            ("MESSAGE_CREATE", 0),
            ("MESSAGE_CREATE", 1),
            ("MESSAGE_CREATE", 0),
            ("INTERACTION_CREATE", 1),
            ("GUILD_UPDATE", 0),
            ("GUILD_UPDATE", 1),
        ]
        await zero.close()
        await one.close()


async def test_gateway_bot_recommends_shards_and_a_bad_shard_is_refused() -> None:
    async with (
        FakeDiscord(recommended_shards=4, max_concurrency=2) as fake,
        aiohttp.ClientSession() as http,
    ):
        headers = {"Authorization": f"Bot {fake.token}"}
        async with http.get(f"{fake.api_url}/gateway/bot", headers=headers) as answer:
            body = await answer.json()
        assert body["shards"] == 4 and body["session_start_limit"]["max_concurrency"] == 2

        for shard in ([2, 2], [0, 0], [-1, 2], [0]):
            ws = await _identify(http, fake, shard)
            closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4010, shard
            await ws.close()

        fake.add_guild()  # two guilds, both on the only shard
        fake.max_guilds_per_shard = 1
        ws = await _identify(http, fake, [0, 1])
        closed = await ws.receive(timeout=5)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4011
        await ws.close()
        assert fake.identifies == 0


async def test_no_session_for_a_guilds_shard_is_an_error_and_the_bots_echo_is_dropped() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        second = fake.add_guild(shard=(1, 2))
        zero = await _identify(http, fake, [0, 2])
        await _dispatches_until(zero, "GUILD_CREATE")
        await fake.wait_until_ready(shard=0)

        with pytest.raises(RuntimeError, match="no gateway session receives guild"):
            await fake.dispatch(
                "MESSAGE_CREATE",
                fake.message_create("lost", author_id=USER_ID, channel_id=second.channel_id),
            )
        headers = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_url}/channels/{second.channel_id}/messages"
        async with http.post(url, headers=headers, json={"content": "hi"}) as posted:
            assert posted.status == 200  # REST needs no gateway; the echo goes nowhere
        assert [e.type for e in fake.events] == ["READY", "GUILD_CREATE"]
        with pytest.raises(TimeoutError):
            await fake.wait_until_ready(timeout=0.05)  # shard 1 of 2 never connected
        await zero.close()


class QuickShardedClient(discord.AutoShardedClient):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before each IDENTIFY but the first; nothing to protect here."""


async def test_discord_py_auto_sharded_client_runs_both_shards_and_answers_in_each(
    fake: FakeDiscord,
) -> None:
    second = fake.add_guild("Second", shard=(1, 2))
    client = QuickShardedClient(
        intents=discord.Intents.default(), shard_count=2, guild_ready_timeout=0.05
    )
    tree = app_commands.CommandTree(client)
    seen = Inbox()

    @tree.command(name="where", description="Which shard am I on?")
    async def where(interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        seen.put((interaction.guild.id, interaction.guild.shard_id))
        await interaction.response.send_message(f"shard {interaction.guild.shard_id}")

    async with running(client, fake):
        assert fake.live_shards() == [(0, 2), (1, 2)]
        assert [p["shard"] for p in fake.identify_payloads] == [[0, 2], [1, 2]]
        first_guild, second_guild = client.get_guild(fake.guild_id), client.get_guild(second.id)
        assert first_guild is not None and first_guild.shard_id == 0
        assert second_guild is not None and second_guild.shard_id == 1
        assert isinstance(second_guild.get_channel(second.channel_id), discord.TextChannel)
        await tree.sync()

        for channel_id in (fake.channel_id, second.channel_id):
            await fake.dispatch(
                "INTERACTION_CREATE",
                fake.interaction_slash_command("where", user_id=USER_ID, channel_id=channel_id),
            )
        assert sorted(await seen.wait_for(2)) == [(fake.guild_id, 0), (second.id, 1)]
        await fake.wait_for_message(lambda m: m.content == "shard 1", channel_id=second.channel_id)
