"""What the bot says in Slack: message text, Block Kit blocks and modals, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from core import wording
from core.catalog import SIZES, Catalog
from core.images import ATTACH_HINT
from core.jobs import Defaults, HistoryPage, Job, UsageReport, Variation
from core.options import MAX_VARIATIONS, Options, ResolvedOptions, describe_set

Block = dict[str, Any]

PROMPT_SHOWN_CHARS = 2500  # a section holds 3000 characters
FALLBACK_PROMPT_CHARS = 200
OPTION_TEXT_CHARS = 75  # Slack's limit for a select option's text
BUTTON_VALUE_CHARS = 2000  # Slack's limit for a button's value

SETTINGS_CALLBACK = "imagebot.settings"
EDIT_CALLBACK = "imagebot.edit"
EDIT_BLOCK = "instruction"
SETTINGS_BLOCKS = ("model", "aspect_ratio", "size", "n")
DEFAULT_CHOICE = "default"
ACTION_PREFIX = "imagebot."
REROLL = "imagebot.reroll"
UPSCALE = "imagebot.upscale."  # + size
EDIT = "imagebot.edit"
VARY = "imagebot.vary"
IMAGINE = "imagebot.imagine"  # under Describe's prompts: makes the one in its value
DELETE = "imagebot.delete"
CANCEL = "imagebot.cancel"
OPEN_SETTINGS = "imagebot.settings"  # the Home tab's button to the settings form


class Message(TypedDict):
    text: str  # what notifications and screen readers show
    blocks: list[Block]


# small pieces


def escape(text: str) -> str:
    """Text shown as typed: `<!channel>`, `<@U…>` or a link in it stays inert text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def quote(text: str, limit: int = PROMPT_SHOWN_CHARS) -> str:
    """A block quote of user text, escaped."""
    return "\n".join(f">{line}" for line in escape(_clip(text, limit)).splitlines() or [""])


def elapsed(seconds: float) -> str:
    total = max(0, round(seconds))
    if total == 0:
        return "under a second"
    if total < 60:
        return f"{total} s"
    minutes, rest = divmod(total, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def describe(options: Options, catalog: Catalog) -> str:
    """The options a job runs with, as people read them: `Gemini 3 Pro Image · 16:9 · 2K`."""
    model = catalog.find(options.model or "")
    if model is None:
        return " · ".join(v for v in (options.model, options.aspect_ratio, options.size) if v)
    return ResolvedOptions(
        model,
        options.aspect_ratio,
        options.size or model.default_size,
        options.temperature,
        bool(options.text),
    ).describe()


# the status message: one per job, edited as the job moves on


def _asked(job: Job) -> str:
    who = f"<@{job.user_id}>"
    if job.kind == "upscale":
        return f"{who} asked for a {job.options.size or 'bigger'} version of the image."
    lead = {
        "reroll": "asked for another take on",
        "edit": "asked for a change",
        "vary": "asked for variations of an image",
    }.get(job.kind, "asked for")
    many = f" ({job.options.n} images)" if job.options.n and job.kind != "reroll" else ""
    return f"{who} {lead}{many}:\n{quote(job.prompt)}"


def _status(job: Job, catalog: Catalog, state: str, extra: list[Block] | None = None) -> Message:
    summary = job.prompt if job.kind != "upscale" else f"{job.options.size} version"
    text = f"<@{job.user_id}>: {escape(_clip(summary, FALLBACK_PROMPT_CHARS))} — {state}"
    blocks = [
        _section(_asked(job)),
        _context(escape(describe(job.options, catalog))),
        _section(state),
        *(extra or []),
    ]
    return {"text": text, "blocks": blocks}


def queued(job: Job, catalog: Catalog, position: int) -> Message:
    where = f" (#{position})" if position > 0 else ""
    return _status(job, catalog, f":hourglass_flowing_sand: Queued{where}", [_cancel(job.id)])


def generating(job: Job, catalog: Catalog, seconds: float) -> Message:
    timer = f" {elapsed(seconds)}" if seconds >= 1 else ""
    return _status(job, catalog, f":art: Generating…{timer}", [_cancel(job.id)])


def cancelling(job: Job, catalog: Catalog) -> Message:
    return _status(job, catalog, f":heavy_multiplication_x: {escape(wording.CANCELLING)}")


def _cancel(job_id: str) -> Block:
    """Under a job that is queued or generating: its requester stops it."""
    button = {"type": "button", "action_id": CANCEL, "text": _plain("Cancel"), "value": job_id}
    return {"type": "actions", "block_id": "imagebot.progress", "elements": [button]}


def done(
    job: Job,
    catalog: Catalog,
    *,
    seconds: float | None,
    notice: str | None,
    upscale_sizes: list[str],
    images_below: bool,
) -> Message:
    took = f" in {elapsed(seconds)}" if seconds is not None else ""
    where = "below" if images_below else "in the thread"
    extra = [_context(f":information_source: {escape(notice)}")] if notice else []
    extra.append(result_buttons(job.id, upscale_sizes))
    return _status(job, catalog, f":white_check_mark: Done{took}: the image is {where}.", extra)


def done_variations(
    job: Job,
    catalog: Catalog,
    variations: tuple[Variation, ...],
    *,
    seconds: float | None,
    notice: str | None,
    upscale_sizes: list[list[str]],
) -> Message:
    """The status message of a request for several images, once all have ended: a row
    of buttons for each image made (numbered as the images below are), and why any other
    was not made."""
    took = f" in {elapsed(seconds)}" if seconds is not None else ""
    made = sum(1 for v in variations if v.outcome.ok)
    extra = [_context(f":information_source: {escape(notice)}")] if notice else []
    shown = 0
    for variation, sizes in zip(variations, upscale_sizes, strict=True):
        if variation.outcome.ok:
            shown += 1
            extra.append(result_buttons(variation.job.id, sizes, number=shown))
        else:
            reason = variation.outcome.error or INTERNAL
            extra.append(_context(f":warning: One image was not made: {escape(reason)}"))
    extra.append(_actions("imagebot.result", [_delete(job.id, images=made)]))
    state = f":white_check_mark: Done{took}: {made} of {len(variations)} images, below."
    return _status(job, catalog, state, extra)


def failed(job: Job, catalog: Catalog, reason: str, model_text: str = "") -> Message:
    extra = [_context(f"The model said: {escape(_clip(model_text, 1000))}")] if model_text else []
    return _status(job, catalog, f":warning: {escape(reason)}", extra)


def result_buttons(job_id: str, upscale_sizes: list[str], *, number: int | None = None) -> Block:
    """Buttons carry only the job id: everything else is looked up, so they outlive restarts.

    Under one image of several (`number`), each label says which image it acts on, and
    Delete (of them all) is left to a row of its own."""
    tag = f" {number}" if number is not None else ""
    buttons: list[Block] = [
        _button(REROLL, f"Re-roll{tag}", job_id),
        *(_button(f"{UPSCALE}{size}", f"Upscale{tag} to {size}", job_id) for size in upscale_sizes),
        _button(EDIT, f"Edit{tag}", job_id),
        _button(VARY, f"Vary{tag}", job_id),
    ]
    if number is not None:
        return _actions(f"imagebot.result.{number}", buttons)
    return _actions("imagebot.result", [*buttons, _delete(job_id, images=1)])


def _button(action_id: str, label: str, job_id: str) -> Block:
    return {"type": "button", "action_id": action_id, "text": _plain(label), "value": job_id}


def _actions(block_id: str, elements: list[Block]) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": elements}


def _delete(job_id: str, *, images: int) -> Block:
    one = images == 1
    return {
        **_button(DELETE, "Delete", job_id),
        "style": "danger",
        "confirm": {
            "title": _plain("Delete this image?" if one else "Delete these images?"),
            "text": _plain(
                "The image and its status message are removed for everyone."
                if one
                else "The images and their status message are removed for everyone."
            ),
            "confirm": _plain("Delete"),
            "deny": _plain("Keep it" if one else "Keep them"),
            "style": "danger",
        },
    }


# short replies


def addressed(user_id: str, text: str) -> str:
    """A reply in a thread, addressed to whoever asked."""
    return f"<@{user_id}> {text}"


def not_in_channel(bot_name: str, channel: str) -> str:
    if channel.startswith("D"):
        # a DM between people: nobody can invite the bot into it
        return (
            "I can't post in a direct message between other people: send me a DM, "
            f"or mention @{bot_name} in a channel I'm in."
        )
    return (
        f"I'm not a member of this conversation, so I can't post here: type "
        f"`/invite @{bot_name}` in the channel (or talk to me in a DM), then try again."
    )


def only_owner_deletes(owner_id: str) -> str:
    return f"Only <@{owner_id}> can delete this image."


RESUMED = wording.RESUMED
POST_FAILED = "I could not post in this conversation just now; please try again in a moment."
# Slack still sent a request from a workspace that removed the app (or revoked its token)
NOT_INSTALLED = (
    "I'm no longer installed in this workspace, so I can't make images here: ask a workspace "
    "admin to install me again."
)
INTERNAL = wording.INTERNAL


def how_to_blend(bot_user_id: str) -> str:
    return (
        "A slash command cannot carry images: to blend some, mention me in a message with "
        f"them attached, such as `<@{bot_user_id}> blend as a watercolour` (two or more "
        "images, up to the model's limit; `--model` and the other options work too)."
    )


def how_to_describe(bot_user_id: str) -> str:
    return (
        "A slash command cannot carry images: to have one described, mention me in a "
        f"message with it attached, such as `<@{bot_user_id}> describe`. I answer with "
        "prompts that would make it, each with a button that makes it."
    )


def described(user_id: str, prompts: list[str]) -> Message:
    """Describe's answer: numbered prompts, a button under each that makes it (the prompt
    rides in the button's value, so the click needs nothing stored)."""
    blocks: list[Block] = [_section(f"<@{user_id}> Prompts that would make this image:")]
    for number, prompt in enumerate(prompts, start=1):
        blocks.append(_section(f"*{number}.* {escape(prompt)}"))
    blocks.append(
        _actions(
            "imagebot.describe",
            [
                _button(IMAGINE, f"Imagine {number}", prompt[:BUTTON_VALUE_CHARS])
                for number, prompt in enumerate(prompts, start=1)
            ],
        )
    )
    text = f"<@{user_id}> Prompts that would make this image: " + " / ".join(
        escape(_clip(p, FALLBACK_PROMPT_CHARS)) for p in prompts
    )
    return {"text": text, "blocks": blocks}


def settings_summary(saved: Options, catalog: Catalog) -> str:
    """Someone's saved defaults as the options they give: `Gemini 3 Pro Image · 16:9 · 2K`."""
    return describe(
        Options(
            model=saved.model or catalog.default.id,
            aspect_ratio=saved.aspect_ratio,
            size=saved.size,
        ),
        catalog,
    ) + (f" · {saved.n} images a request" if saved.n and saved.n > 1 else "")


def home_view(
    page: HistoryPage,
    links: list[str | None],
    defaults: Options,
    report: UsageReport,
    catalog: Catalog,
    *,
    month: str,
) -> Block:
    """The Home tab: recent images, settings (with a button to change them), usage."""
    settings = f"*Your settings:* {escape(settings_summary(defaults, catalog))}"
    change = {
        "type": "button",
        "action_id": OPEN_SETTINGS,
        "text": _plain("Change"),
        "value": "settings",
    }
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": _plain("imagebot")},
            _section(history_text(page, links, catalog, command="/imagine")),
            {"type": "divider"},
            {**_section(settings), "accessory": change},
            {"type": "divider"},
            _section(usage_text(report, month)),
            _context(
                "Make an image with `/imagine a lighthouse at dusk`; `/imagine help` lists "
                "the options."
            ),
        ],
    }


HISTORY_PROMPT_CHARS = 80


def history_text(
    page: HistoryPage, links: list[str | None], catalog: Catalog, *, command: str
) -> str:
    """A page of someone's images, newest first, each linked to its status message."""
    if not page.items:
        if page.page > 1:
            return f"There is no page {page.page}: `{command} history` shows your latest images."
        return f"You have no images here yet: make one with `{command} a lighthouse at dusk`."
    lines = [f"*Your images, newest first* (page {page.page})"]
    for item, link in zip(page.items, links, strict=True):
        job = item.job
        made = f"<!date^{int(job.created_at)}^{{date_short}} {{time}}|{_utc(job.created_at)}>"
        shown = escape(_clip(job.prompt or f"{job.kind} of an image", HISTORY_PROMPT_CHARS))
        title = f"<{link}|{shown}>" if link else shown
        lines.append(f"• {title} — {escape(describe(job.options, catalog))}, {made}")
    if page.more:
        lines.append(f"Older: `{command} history {page.page + 1}`")
    return "\n".join(lines)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%d %b %H:%M UTC")


def help_text(catalog: Catalog, *, command: str, bot_user_id: str, shared: str = "") -> str:
    """The help; `shared` says which workspace and channel defaults apply where it is asked."""
    models = []
    for model in catalog.models:
        name = model.aliases[0] if model.aliases else model.id
        default = " (default)" if model is catalog.default else ""
        use = f" for {model.use}" if model.use else ""
        models.append(
            f"• `--model {name}`: *{model.name}*{default}{use}; sizes "
            f"{', '.join(model.size_names)}; up to {model.max_reference_images} reference images"
        )
    ratios = ", ".join(_all_ratios(catalog))
    return "\n".join(
        [
            f"*Make an image:* `{command} a lighthouse at dusk --ar 16:9`",
            "*Options*, anywhere in the text: `--ar 16:9` aspect ratio · `--size 2K` "
            "(0.5K, 1K, 2K, 4K) · `--model pro` · `--temp 0.4` (0 to 1) · `--n 4` up to "
            "four images at once · `--text` a few words with the image",
            f"*Keep going:* in the image's thread, mention <@{bot_user_id}> with a change "
            '("now at night"); attach a photo to use it as a reference. Mentioning me in '
            "a channel starts a new conversation; so does a DM.",
            f"*Blend:* mention <@{bot_user_id}> with `blend` and two or more images attached "
            "(`blend as a watercolour`) to make them into one",
            f"*Describe:* mention <@{bot_user_id}> with `describe` and one image attached for "
            "prompts that would make it, each with a button that makes it",
            "*Buttons:* Re-roll · Upscale · Edit · Vary (as many new images from that "
            "one) · Delete (your own images) · Cancel while it is being made",
            f"*More:* `{command} settings` your defaults · `{command} usage` this month's "
            f"images and cost · `{command} history` your images · `{command} help` this help",
            f"*Defaults for everyone* (workspace admins and owners): `{command} settings "
            f"workspace`, `{command} settings channel`; your own win over them"
            + (f". Here: {shared}" if shared else ""),
            f"*Aspect ratios:* {ratios} (not every model makes every one)",
            "*Models:*",
            *models,
        ]
    )


def usage_text(report: UsageReport, month: str) -> str:
    return "\n".join(
        [f"*Images in {month} so far* (estimated cost):", *(f"• {line}" for line in report.lines())]
    )


def not_an_image(name: str, mimetype: str) -> str:
    kind = f" ({mimetype})" if mimetype else ""
    return f"I can only use images as references, and `{name}`{kind} is not one: {ATTACH_HINT}"


def file_not_shared(name: str) -> str:
    return (
        f"Slack would not let me see `{name}`, shared from another organisation: "
        "download it and attach it here yourself."
    )


FILES_SCOPE_MISSING = (
    "I am not allowed to read files here (the app lacks the files:read scope): ask an admin "
    "to reinstall it."
)


def file_not_fetched(name: str) -> str:
    return f"Slack would not tell me about `{name}` just now; try attaching it again."


def file_hidden_by_limit(name: str) -> str:
    return (
        f"Slack hides `{name}` because it is past the free plan's file history limit: "
        "attach the image again."
    )


def file_deleted(name: str) -> str:
    return f"`{name}` was deleted from Slack: attach the image again."


def file_external(name: str, service: str) -> str:
    where = f" on {service.replace('_', ' ').title()}" if service else " elsewhere"
    return (
        f"`{name}` is a link to a file kept{where}, which I cannot open: attach the image itself."
    )


# modals


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(_clip(text, OPTION_TEXT_CHARS)), "value": value}


def _select(block_id: str, label: str, options: list[dict[str, Any]], chosen: str | None) -> Block:
    initial = next((o for o in options if o["value"] == chosen), options[0])
    return {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": {
            "type": "static_select",
            "action_id": "choice",
            "options": options,
            "initial_option": initial,
        },
    }


def _all_ratios(catalog: Catalog) -> list[str]:
    seen = {r for m in catalog.models for r in m.aspect_ratios}

    def width_over_height(ratio: str) -> float:
        width, _, height = ratio.partition(":")
        return int(width) / int(height)

    return sorted(seen, key=width_over_height)


WORKSPACE_SCOPE = "workspace"  # a settings form's private_metadata: whose defaults it sets
CHANNEL_SCOPE = "channel:"  # + the channel id
ONLY_ADMINS = (
    "Only workspace admins and owners can change the defaults of the workspace or of a "
    "channel; `/imagine settings` sets your own."
)
NEEDS_USERS_READ = (
    "I cannot tell who the workspace admins are without the `users:read` permission: ask an "
    "admin to reinstall me (the app's manifest asks for it), then try again."
)


def shared_summary(defaults: Defaults, catalog: Catalog) -> str:
    """The workspace's and this channel's defaults, as said under someone's own."""
    parts = []
    for label, options in (("workspace", defaults.team), ("this channel", defaults.channel)):
        if options != Options():
            parts.append(f"{label}: {escape(describe_set(options, catalog))}")
    return "; ".join(parts)


def settings_view(
    catalog: Catalog,
    current: Options,
    *,
    scope: str = "",
    shared: Defaults | None = None,
) -> Block:
    """The settings form: someone's own defaults (`scope` ""), the workspace's
    (WORKSPACE_SCOPE) or a channel's (CHANNEL_SCOPE + id); `shared` are the layers under
    someone's own, shown for what they start from."""
    model_options = [_option(f"Default ({catalog.default.name})", DEFAULT_CHOICE)] + [
        _option(m.name, m.id) for m in catalog.models
    ]
    ratio_options = [_option("The model's default", DEFAULT_CHOICE)] + [
        _option(r, r) for r in _all_ratios(catalog)
    ]
    size_options = [_option("The model's default", DEFAULT_CHOICE)] + [_option(s, s) for s in SIZES]
    n_options = [_option("Not set (one)", DEFAULT_CHOICE), _option("One", "1")] + [
        _option(f"{n} at once", str(n)) for n in range(2, MAX_VARIATIONS + 1)
    ]
    current_model = catalog.find(current.model or "")
    title = "Image defaults"
    note = "Options you type (`--ar`, `--size`, `--model`, `--n`) always win over these."
    if scope == WORKSPACE_SCOPE:
        title = "Workspace defaults"
        note = "Everyone here starts from these, unless a channel or they saved their own. " + note
    elif scope.startswith(CHANNEL_SCOPE):
        title = "Channel defaults"
        channel = scope.removeprefix(CHANNEL_SCOPE)
        note = (
            f"Everyone in <#{channel}> starts from these (over the workspace's), unless they "
            "saved their own. " + note
        )
    elif shared is not None and shared_summary(shared, catalog):
        layers = shared_summary(shared, catalog)
        note = f"Set for everyone where you are: {layers}. Yours win over these. " + note
    return {
        "type": "modal",
        "callback_id": SETTINGS_CALLBACK,
        "private_metadata": scope,
        "title": _plain(title),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "blocks": [
            _select("model", "Model", model_options, current_model.id if current_model else None),
            _select("aspect_ratio", "Aspect ratio", ratio_options, current.aspect_ratio),
            _select("size", "Size", size_options, current.size),
            _select("n", "Images a request", n_options, str(current.n) if current.n else None),
            _context(note),
        ],
    }


def settings_saved_view(summary: str, scope: str = "") -> Block:
    whose = "Your images"
    if scope == WORKSPACE_SCOPE:
        whose = "Images in this workspace"
    elif scope.startswith(CHANNEL_SCOPE):
        whose = f"Images in <#{scope.removeprefix(CHANNEL_SCOPE)}>"
    return {
        "type": "modal",
        "title": _plain("Image defaults"),
        "close": _plain("Done"),
        "blocks": [_section(f":white_check_mark: Saved. {whose} now start from {summary}.")],
    }


def edit_view(job: Job) -> Block:
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": job.id,
        "title": _plain("Edit image"),
        "submit": _plain("Make it"),
        "close": _plain("Cancel"),
        "blocks": [
            _context(f"Changing the image made for:\n{quote(job.prompt, 500)}"),
            {
                "type": "input",
                "block_id": EDIT_BLOCK,
                "label": _plain("What should change?"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": True,
                    "placeholder": _plain("e.g. make it night-time, add a red kite --ar 16:9"),
                },
            },
        ],
    }
