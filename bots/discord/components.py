"""Buttons under results and the Edit form; their custom ids carry the job id across restarts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import discord

from bots.discord.forms import CHANGE_FIELD

_JOB = r"(?P<job>[0-9a-f]{32})"
EDIT_FORM = re.compile(rf"imagebot:edit-form:{_JOB}")
EDIT_TITLE = "Edit this image"
TEXT_INPUT_MAX = 4000


class ButtonHandlers(Protocol):
    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def upscale(self, interaction: discord.Interaction, job_id: str, size: str) -> None: ...

    async def edit(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def vary(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def imagine_suggestion(self, interaction: discord.Interaction, number: int) -> None: ...

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None: ...


def _handlers(interaction: discord.Interaction) -> ButtonHandlers:
    handlers: ButtonHandlers = interaction.client.handlers  # type: ignore[attr-defined]
    return handlers


Button = discord.ui.Button[discord.ui.View]


def _button(
    custom_id: str,
    label: str,
    emoji: str,
    style: discord.ButtonStyle = discord.ButtonStyle.secondary,
) -> Button:
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id)


class RerollButton(discord.ui.DynamicItem[Button], template=rf"imagebot:reroll:{_JOB}"):
    def __init__(self, job_id: str, *, label: str = "Re-roll", row: int | None = None) -> None:
        super().__init__(_button(f"imagebot:reroll:{job_id}", label, "🎲"), row=row)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).reroll(interaction, self.job_id)


class UpscaleButton(
    discord.ui.DynamicItem[Button], template=rf"imagebot:upscale:(?P<size>[0-9.]+K):{_JOB}"
):
    def __init__(
        self, job_id: str, size: str, *, label: str | None = None, row: int | None = None
    ) -> None:
        custom_id = f"imagebot:upscale:{size}:{job_id}"
        super().__init__(_button(custom_id, label or f"Upscale {size}", "🔍"), row=row)
        self.job_id = job_id
        self.size = size

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> UpscaleButton:
        return cls(match["job"], match["size"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).upscale(interaction, self.job_id, self.size)


class EditButton(discord.ui.DynamicItem[Button], template=rf"imagebot:edit:{_JOB}"):
    def __init__(self, job_id: str, *, label: str = "Edit", row: int | None = None) -> None:
        primary = discord.ButtonStyle.primary
        super().__init__(_button(f"imagebot:edit:{job_id}", label, "✏️", primary), row=row)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> EditButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).edit(interaction, self.job_id)


class VaryButton(discord.ui.DynamicItem[Button], template=rf"imagebot:vary:{_JOB}"):
    """As many new images as the request it is under made, each a variation of this one."""

    def __init__(self, job_id: str, *, label: str = "Vary", row: int | None = None) -> None:
        super().__init__(_button(f"imagebot:vary:{job_id}", label, "🌀"), row=row)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VaryButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).vary(interaction, self.job_id)


class DeleteButton(discord.ui.DynamicItem[Button], template=rf"imagebot:delete:{_JOB}"):
    def __init__(self, job_id: str, *, row: int | None = None) -> None:
        danger = discord.ButtonStyle.danger
        super().__init__(_button(f"imagebot:delete:{job_id}", "Delete", "🗑️", danger), row=row)
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> DeleteButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).delete(interaction, self.job_id)


class SuggestionButton(
    discord.ui.DynamicItem[Button], template=r"imagebot:suggestion:(?P<number>[1-9])"
):
    """Under Describe's prompts: makes prompt `number`, read from the message it is on (the
    bot's own card, so nothing has to be stored for it)."""

    def __init__(self, number: int) -> None:
        primary = discord.ButtonStyle.primary
        custom_id = f"imagebot:suggestion:{number}"
        super().__init__(_button(custom_id, f"Imagine {number}", "🎨", primary))
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> SuggestionButton:
        return cls(int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).imagine_suggestion(interaction, self.number)


class CancelButton(discord.ui.DynamicItem[Button], template=rf"imagebot:cancel:{_JOB}"):
    """Under a queued or generating job: its requester stops it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(_button(f"imagebot:cancel:{job_id}", "Cancel", "✖️"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handlers(interaction).cancel(interaction, self.job_id)


DYNAMIC_ITEMS = (
    RerollButton,
    UpscaleButton,
    EditButton,
    VaryButton,
    DeleteButton,
    CancelButton,
    SuggestionButton,
)


def progress_view(job_id: str) -> discord.ui.View:
    """Under a job that is queued or generating: Cancel."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job_id: str, upscale_sizes: Sequence[str]) -> discord.ui.View:
    """Re-roll, one Upscale per larger size, Edit, Vary and Delete."""
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    for size in upscale_sizes:
        view.add_item(UpscaleButton(job_id, size))
    view.add_item(EditButton(job_id))
    view.add_item(VaryButton(job_id))
    view.add_item(DeleteButton(job_id))
    return view


def variations_view(
    made: Sequence[tuple[str, Sequence[str]]], delete_job_id: str
) -> discord.ui.View:
    """Under several images: a row for each (its job id and larger sizes), numbered as the
    images are, and a last row with Delete (of them all). At most four rows of five."""
    view = discord.ui.View(timeout=None)
    for row, (job_id, sizes) in enumerate(made):
        number = row + 1
        view.add_item(RerollButton(job_id, label=f"Re-roll {number}", row=row))
        for size in sizes[:2]:  # five buttons fit in a row
            view.add_item(UpscaleButton(job_id, size, label=f"{number}: {size}", row=row))
        view.add_item(EditButton(job_id, label=f"Edit {number}", row=row))
        view.add_item(VaryButton(job_id, label=f"Vary {number}", row=row))
    view.add_item(DeleteButton(delete_job_id, row=len(made)))
    return view


def suggestions_view(count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number in range(1, count + 1):
        view.add_item(SuggestionButton(number))
    return view


def failure_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id, label="Try again"))
    return view


def edit_form(job_id: str, max_chars: int) -> discord.ui.Modal:
    """The form the Edit button opens; its submission is read by custom id, not by this object.

    A form can be submitted after a restart, when no Modal object is left in memory, so
    submissions are handled from the raw interaction (see EDIT_FORM).
    """
    form = discord.ui.Modal(title=EDIT_TITLE, custom_id=f"imagebot:edit-form:{job_id}")
    form.add_item(
        discord.ui.TextInput(
            label="What should change?",
            custom_id=CHANGE_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder="make it night-time and add a fox --ar 16:9",
            max_length=min(TEXT_INPUT_MAX, max_chars),
        )
    )
    return form
