"""What the bot says on Discord: message texts and result embeds, built from plain data."""

from __future__ import annotations

import re
from datetime import datetime

import discord

from core import wording
from core.catalog import Catalog
from core.images import extension_for, format_megabytes, printable_name
from core.jobs import Defaults, HistoryItem, HistoryPage, Job, Outcome, UsageReport
from core.options import Options, describe_set

COLOUR = 0x5865F2
DESCRIPTION_MAX = 4000
FIELD_MAX = 1024
FOOTER_MAX = 2000
CONTENT_MAX = 2000
INTERNAL = wording.INTERNAL
ONLY_REQUESTER = "Only the person who asked for this image can delete it."
LATE = (
    "it finished after the 15 minutes Discord gives me to answer a command where I am not a member"
)
NOT_ATTACHED_HERE = "I may not attach files in that channel"
GONE_HERE = "the message and the channel it was asked in are out of my reach"
ROLE_MENTION_UNREAD = (
    "I could not see the text of that message, which mentions my role rather than me: "
    "mention me (the bot, not the role) and I will see what you wrote."
)
STICKER_ONLY = "I cannot draw from a sticker: type what you would like me to draw."
VOICE_MESSAGE = (
    "I cannot listen to voice messages: type what you would like me to draw "
    "(and attach images if you want me to work from them)."
)

# "@everyone", "@here", <@123>, <@!123>, <@&123>: shown as typed, never as a ping
_MENTION = re.compile(r"@(everyone|here)|<@([!&]?)(\d+)>")
_TITLES = {"reroll": "🎲 Re-roll", "edit": "✏️ Edit", "vary": "🌀 Variations"}


def no_ping(text: str) -> str:
    """`text` with every mention broken by a zero-width space, so it can never notify anyone."""
    return _MENTION.sub(lambda m: m.group(0).replace("@", "@\u200b", 1), text)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def queued(position: int) -> str:
    return f"⏳ Queued (#{position})…"


def generating(elapsed_seconds: float) -> str:
    if elapsed_seconds < 1:
        return "🎨 Generating…"
    return f"🎨 Generating… {elapsed_seconds:.0f} s"


def failure(reason: str) -> str:
    return clip(f"⚠️ {no_ping(reason)}", CONTENT_MAX)


HISTORY_PROMPT_CHARS = 80


def history_text(page: HistoryPage, catalog: Catalog) -> str:
    """A page of someone's images, newest first, each linked to the message showing it."""
    if not page.items:
        if page.page > 1:
            return f"There is no page {page.page}: `/imagine-history` shows your latest images."
        return "You have no images here yet: make one with `/imagine`."
    lines = [f"**Your images, newest first** (page {page.page})"]
    for item in page.items:
        job = item.job
        prompt = no_ping(clip(job.prompt or f"{job.kind} of an image", HISTORY_PROMPT_CHARS))
        prompt = prompt.replace("[", "(").replace("]", ")")
        link = _jump_url(item)
        title = f"[{prompt}]({link})" if link else prompt
        made = f"<t:{int(job.created_at)}:R>"
        lines.append(f"• {title} — {describe_options(job.options, catalog)}, {made}")
    if page.more:
        lines.append(f"Older: `/imagine-history page:{page.page + 1}`")
    return clip("\n".join(lines), CONTENT_MAX)


def _jump_url(item: HistoryItem) -> str | None:
    """The message that shows the image (the last one linked to its job)."""
    target = item.job.target or {}
    channel = target.get("channel_id")
    if not item.message_keys or not channel:
        return None
    guild = target.get("guild_id") or "@me"
    return f"https://discord.com/channels/{guild}/{channel}/{item.message_keys[-1]}"


def describe_options(options: Options, catalog: Catalog) -> str:
    """`Gemini 3 Pro Image · 16:9 · 2K · temp 0.4 · with text`."""
    model = catalog.find(options.model or "")
    parts = [model.name if model else (options.model or catalog.default.name)]
    if options.aspect_ratio:
        parts.append(options.aspect_ratio)
    if options.size:
        parts.append(options.size)
    if options.temperature is not None:
        parts.append(f"temp {options.temperature:g}")
    if options.text:
        parts.append("with text")
    return " · ".join(parts)


def image_filename(job: Job, index: int, mime_type: str) -> str:
    suffix = f"-{index + 1}" if index else ""
    return f"imagebot-{job.id[:8]}{suffix}{extension_for(mime_type)}"


def display_limit(limit_bytes: int) -> int:
    """The upload limit rounded down to what a message can name exactly (10 MiB → 10 MB).

    Discord counts its limits in binary megabytes; a file fitted under the rounded value
    fits both, and the note then reads "the 10 MB upload limit", as Discord's own help says.
    """
    step = 1_000_000 if limit_bytes >= 1_000_000 else 100_000 if limit_bytes >= 100_000 else 1
    return max(1, limit_bytes // step * step)


def title_for(job: Job) -> str | None:
    if job.kind == "upscale":
        return f"🔍 Upscaled to {job.options.size}" if job.options.size else "🔍 Upscaled"
    return _TITLES.get(job.kind)


def result_embed(
    job: Job,
    outcome: Outcome,
    catalog: Catalog,
    *,
    image_name: str | None,
    notes: list[str],
) -> discord.Embed:
    """The card under a result image: prompt, options, requester, the model's words, notes."""
    description = None if job.kind == "upscale" else clip(no_ping(job.prompt), DESCRIPTION_MAX)
    embed = discord.Embed(title=title_for(job), description=description, colour=COLOUR)
    embed.add_field(name="Options", value=describe_options(job.options, catalog), inline=True)
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>", inline=True)
    if outcome.text and job.options.text:
        embed.add_field(name="Model", value=clip(no_ping(outcome.text), FIELD_MAX), inline=False)
    if image_name is not None:
        embed.set_image(url=f"attachment://{image_name}")
    shown = [_sentence(note) for note in notes if note]
    if shown:
        embed.set_footer(text=clip(" ".join(shown), FOOTER_MAX))
    return embed


def variation_embeds(
    job: Job,
    outcome: Outcome,
    catalog: Catalog,
    *,
    image_names: list[str],
    failures: list[str],
    notes: list[str],
) -> list[discord.Embed]:
    """Several images of one request: the card (numbered "1") with the first image, then
    one numbered embed for each other image; why any was not made is on the card."""
    cards = []
    for number, name in enumerate(image_names, start=1):
        if number == 1:
            embed = result_embed(job, outcome, catalog, image_name=name, notes=notes)
            embed.title = f"{embed.title or '🖼️ Images'} · 1 of {len(image_names)}"
            for reason in failures:
                embed.add_field(
                    name="One image was not made", value=clip(reason, FIELD_MAX), inline=False
                )
        else:
            embed = discord.Embed(title=f"{number} of {len(image_names)}", colour=COLOUR)
            embed.set_image(url=f"attachment://{name}")
        cards.append(embed)
    return cards


DESCRIBED_TITLE = "🔎 Prompts for this image"
NO_SUGGESTION = "I cannot read that prompt any more; run /describe again."


def described_embed(prompts: list[str], user_id: str) -> discord.Embed:
    """Describe's answer: a numbered field for each prompt (the buttons read them back)."""
    embed = discord.Embed(title=DESCRIBED_TITLE, colour=COLOUR)
    for number, prompt in enumerate(prompts, start=1):
        embed.add_field(name=str(number), value=clip(no_ping(prompt), FIELD_MAX), inline=False)
    embed.add_field(name="Requested by", value=f"<@{user_id}>", inline=False)
    return embed


def suggestion(embeds: list[discord.Embed], number: int) -> str | None:
    """Prompt `number` of a Describe answer, as its card shows it."""
    for embed in embeds:
        if embed.title == DESCRIBED_TITLE:
            fields = [f for f in embed.fields if f.name == str(number)]
            return fields[0].value if fields and fields[0].value else None
    return None


def fitted_note(note: str) -> str:
    """FittedImage.note as said to the user: "The image was downscaled to … limit."."""
    return f"The image was {note}."


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def usage_text(
    report: UsageReport, catalog: Catalog, month_start: datetime, *, in_server: bool
) -> str:
    since = f"{month_start.day} {month_start:%B}"
    you, server, *limits = report.lines()
    lines = [f"**Usage this month** (since {since}, UTC)", you]
    if in_server:  # a DM is its own "server" of one: the second line would repeat the first
        lines.append(server)
    by_model = report.tenant.by_model if in_server else report.user.by_model
    if by_model:
        # an old id (a preview id) and the current one are the same model
        counts: dict[str, int] = {}
        for model_id, count in by_model.items():
            model = catalog.find(model_id)
            name = model.name if model else model_id
            counts[name] = counts.get(name, 0) + count
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        lines.append("By model: " + ", ".join(f"{name} {count}" for name, count in ranked))
    lines += limits
    lines.append("Costs are estimates from published per-image prices.")
    return "\n".join(lines)


SHARED_DEFAULTS_IN_SERVERS = (
    "Server and channel defaults are set in a server; here, leave out `for`."
)
ONLY_MANAGERS = (
    "Only members with Manage Server can change the server's or a channel's defaults; "
    "`/imagine-settings` without `for` sets your own."
)
_WHOSE = {
    "me": "Your defaults",
    "server": "This server's defaults",
    "channel": "This channel's defaults",
}


def settings_text(defaults: Defaults, catalog: Catalog, *, saved: bool, scope: str = "me") -> str:
    """The defaults `scope` names (yours, the server's or this channel's), with the layers
    that apply here under them."""
    options = {"me": defaults.user, "server": defaults.team, "channel": defaults.channel}[scope]
    model = catalog.find(options.model or "")
    model_text = f"**{model.name}**" if model else f"not set ({catalog.default.name})"
    ratio_text = f"**{options.aspect_ratio}**" if options.aspect_ratio else "not set (the model's)"
    size_text = f"**{options.size}**" if options.size else "not set (1K where the model has it)"
    n_text = f"**{options.n}**" if options.n else "not set (1)"
    head = f"Saved. {_WHOSE[scope]} now:" if saved else f"{_WHOSE[scope]}:"
    lines = [
        head,
        f"• Model: {model_text}",
        f"• Aspect ratio: {ratio_text}",
        f"• Size: {size_text}",
        f"• Images a request: {n_text}",
    ]
    for label, layer in (("this server", defaults.team), ("this channel", defaults.channel)):
        if layer != Options() and layer is not options:
            lines.append(f"Set for everyone in {label}: {describe_set(layer, catalog)}.")
    lines.append(
        "Options given to /imagine, or typed as flags, win over these; your own defaults win "
        "over the channel's, and the channel's over the server's."
    )
    return "\n".join(lines)


def too_big(name: str, size: int, limit: int) -> str:
    return (
        f"`{no_ping(printable_name(name))}` is {format_megabytes(size, up=True)}; the limit is "
        f"{format_megabytes(limit)}: send a smaller image."
    )


# when the result cannot be shown where it was asked for


def cannot_post(permission: str) -> str:
    return f"I am missing the {permission} permission in that channel"


def not_attached(*, sent_by_dm: bool) -> str:
    where = "so I sent it to you in a DM" if sent_by_dm else "and I could not DM it to you either"
    return (
        "⚠️ I made the image but may not attach files here (the **Attach Files** permission "
        f"is denied to me in this channel), {where}. A server admin can allow it."
    )


def in_dm_instead(channel_id: int, guild_id: int | None, reason: str, *, image: bool) -> str:
    asked = f" in <#{channel_id}>" if guild_id is not None else ""
    what = "the image you asked for" if image else "what became of your request"
    return f"Here is {what}{asked}: {reason}, so it comes to you here."


def embed_as_text(embed: discord.Embed) -> str:
    """A card written out as message text, for a channel that does not allow cards."""
    lines = [f"**{embed.title}**"] if embed.title else []
    if embed.description:
        lines.append(embed.description)
    lines.extend(f"**{f.name}:** {f.value}" for f in embed.fields)
    if embed.footer.text:
        lines.append(f"-# {embed.footer.text}")
    return "\n".join(lines)
