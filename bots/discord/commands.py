"""The slash commands: /imagine, /imagine-settings, /imagine-usage and /imagine-history."""

from __future__ import annotations

import logging
from typing import Optional, Protocol

import discord
from discord import app_commands

from bots.discord import forms, messages
from bots.discord.delivery import NO_PING
from core.catalog import SIZES, Catalog, Model
from core.options import MAX_VARIATIONS

log = logging.getLogger(__name__)

CHOICES_MAX = 25  # Discord's limit per option
N_HELP = f"How many images to make at once, each its own (1 to {MAX_VARIATIONS})"
SETTINGS_SCOPES = [
    app_commands.Choice(name="me", value="me"),
    app_commands.Choice(name="this channel", value="channel"),
    app_commands.Choice(name="this server", value="server"),
]
COMMAND_NAMES = (
    "imagine",
    "blend",
    "describe",
    "imagine-settings",
    "imagine-usage",
    "imagine-history",
)
# /blend has 16 image options: more than any model takes, so a blend of too many is told
# the model's limit rather than cut short


class CommandHandlers(Protocol):
    async def imagine(
        self,
        interaction: discord.Interaction,
        typed: forms.ImagineOptions,
        images: list[discord.Attachment | None],
    ) -> None: ...

    async def blend(
        self,
        interaction: discord.Interaction,
        typed: forms.ImagineOptions,
        images: list[discord.Attachment | None],
    ) -> None: ...

    async def describe(
        self, interaction: discord.Interaction, image: discord.Attachment
    ) -> None: ...

    async def show_settings(
        self,
        interaction: discord.Interaction,
        *,
        model: str | None,
        aspect_ratio: str | None,
        size: str | None,
        reset: bool,
        n: int | None = None,
        scope: str = "me",
    ) -> None: ...

    async def show_usage(self, interaction: discord.Interaction) -> None: ...

    async def show_history(self, interaction: discord.Interaction, page: int) -> None: ...


def _handlers(interaction: discord.Interaction) -> CommandHandlers:
    handlers: CommandHandlers = interaction.client.handlers  # type: ignore[attr-defined]
    return handlers


def _malformed(error: app_commands.AppCommandError) -> bool:
    if isinstance(error, app_commands.CommandSignatureMismatch | app_commands.TransformerError):
        return True
    return isinstance(error, app_commands.CommandInvokeError) and isinstance(
        error.original, TypeError | ValueError
    )


class Tree(app_commands.CommandTree[discord.Client]):
    """A command tree that answers, privately, when a command breaks, instead of going silent."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not isinstance(interaction.data, dict):
            log.warning("ignored an interaction without data (id %s)", interaction.id)
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if _malformed(error):
            # options Discord's own schema rules out: someone else's client, not our bug
            log.warning("refused a command of an unexpected shape: %s", error)
        else:
            log.error("command %r failed", interaction.data, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(
                    messages.failure(messages.INTERNAL), ephemeral=True, allowed_mentions=NO_PING
                )
            else:
                await interaction.response.send_message(
                    messages.failure(messages.INTERNAL), ephemeral=True, allowed_mentions=NO_PING
                )
        except discord.HTTPException:
            log.warning("could not tell the user about the failure", exc_info=True)


def model_choices(catalog: Catalog) -> list[app_commands.Choice[str]]:
    """Each model by its friendly name and first alias: "Gemini 3 Pro Image (pro)"."""
    choices = []
    for model in catalog.models[:CHOICES_MAX]:
        value = model.aliases[0] if model.aliases else model.id
        label = f"{model.name} ({value})" if model.aliases else model.name
        choices.append(app_commands.Choice(name=messages.clip(label, 100), value=value))
    return choices


def ratio_choices(catalog: Catalog) -> list[app_commands.Choice[str]]:
    """Every ratio some model makes, marked with its shape and the models that make it."""
    ratios: list[str] = []
    for model in catalog.models:
        ratios += [r for r in model.aspect_ratios if r not in ratios]
    choices = []
    for ratio in ratios[:CHOICES_MAX]:
        width, _, height = ratio.partition(":")
        shape = (
            "square" if width == height else "landscape" if int(width) > int(height) else "portrait"
        )
        makers = catalog.supporting_ratio(ratio)
        label = f"{ratio} {shape}"
        if len(makers) < len(catalog.models):
            label += f" ({', '.join(_short(m) for m in makers)} only)"
        choices.append(app_commands.Choice(name=messages.clip(label, 100), value=ratio))
    return choices


def size_choices(catalog: Catalog) -> list[app_commands.Choice[str]]:
    made = [size for size in SIZES if catalog.supporting_size(size)]
    choices = []
    for size in made:
        makers = catalog.supporting_size(size)
        label = size
        if len(makers) < len(catalog.models):
            label += f" ({', '.join(_short(m) for m in makers)})"
        choices.append(app_commands.Choice(name=messages.clip(label, 100), value=size))
    return choices


def _short(model: Model) -> str:
    return model.aliases[0] if model.aliases else model.name


def add_commands(
    tree: app_commands.CommandTree[discord.Client],
    catalog: Catalog,
    *,
    dms: bool,
    user_installs: bool = True,
) -> None:
    """Define the commands on `tree`; the same definitions are run and synced.

    With `user_installs`, a user can add the commands to their own account and use them in
    any server, in their DM with the bot and, with `dms`, in group DMs and other DMs (where
    only the interaction's own messages reach the channel).
    """
    models, ratios, sizes = model_choices(catalog), ratio_choices(catalog), size_choices(catalog)
    where = app_commands.allowed_contexts(
        guilds=True, dms=dms, private_channels=dms and user_installs
    )
    installs = app_commands.allowed_installs(guilds=True, users=user_installs)

    @tree.command(name="imagine", description="Make an image from a prompt")
    @where
    @installs
    @app_commands.describe(
        prompt="What to draw; flags such as --ar 16:9 --size 2K work here too",
        aspect_ratio="Shape of the image",
        size="Resolution (larger sizes cost more and take longer)",
        model="Which image model to use",
        temperature="0 is steady, 1 is adventurous",
        image="A reference image",
        image2="Another reference image",
        image3="A third reference image",
        text="Also ask the model for a few words about the image",
        n=N_HELP,
    )
    @app_commands.choices(aspect_ratio=ratios, size=sizes, model=models)
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        aspect_ratio: Optional[str] = None,  # noqa: UP045 - discord.py reads these at runtime
        size: Optional[str] = None,  # noqa: UP045
        model: Optional[str] = None,  # noqa: UP045
        temperature: Optional[app_commands.Range[float, 0.0, 1.0]] = None,  # noqa: UP045
        image: Optional[discord.Attachment] = None,  # noqa: UP045
        image2: Optional[discord.Attachment] = None,  # noqa: UP045
        image3: Optional[discord.Attachment] = None,  # noqa: UP045
        text: Optional[bool] = None,  # noqa: UP045
        n: Optional[app_commands.Range[int, 1, MAX_VARIATIONS]] = None,  # noqa: UP045
    ) -> None:
        typed = forms.ImagineOptions(
            prompt=prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            size=size,
            temperature=temperature,
            text=text,
            n=n,
        )
        await _handlers(interaction).imagine(interaction, typed, [image, image2, image3])

    @tree.command(name="describe", description="Prompts that would make an image, to run")
    @where
    @installs
    @app_commands.describe(image="The image to describe")
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await _handlers(interaction).describe(interaction, image)

    @tree.command(name="imagine-settings", description="Your default model, aspect ratio and size")
    @where
    @installs
    @app_commands.describe(
        model="Default model",
        aspect_ratio="Default shape",
        size="Default resolution",
        n="Default number of images a request makes (1 to 4)",
        reset="Forget these defaults",
        scope="Whose defaults: yours, or (with Manage Server) this channel's or this server's",
    )
    @app_commands.rename(scope="for")
    @app_commands.choices(aspect_ratio=ratios, size=sizes, model=models, scope=SETTINGS_SCOPES)
    async def imagine_settings(
        interaction: discord.Interaction,
        model: Optional[str] = None,  # noqa: UP045
        aspect_ratio: Optional[str] = None,  # noqa: UP045
        size: Optional[str] = None,  # noqa: UP045
        n: Optional[app_commands.Range[int, 1, MAX_VARIATIONS]] = None,  # noqa: UP045
        reset: bool = False,
        scope: str = "me",
    ) -> None:
        await _handlers(interaction).show_settings(
            interaction,
            model=model,
            aspect_ratio=aspect_ratio,
            size=size,
            n=n,
            reset=reset,
            scope=scope,
        )

    @tree.command(
        name="imagine-usage", description="Images made and their estimated cost this month"
    )
    @where
    @installs
    async def imagine_usage(interaction: discord.Interaction) -> None:
        await _handlers(interaction).show_usage(interaction)

    @tree.command(name="imagine-history", description="Your images, newest first, with links")
    @where
    @installs
    @app_commands.describe(page="Which page (10 images a page)")
    async def imagine_history(
        interaction: discord.Interaction,
        page: app_commands.Range[int, 1, 10_000] = 1,
    ) -> None:
        await _handlers(interaction).show_history(interaction, page)

    @tree.command(name="blend", description="Blend two or more images into one")
    @where
    @installs
    @app_commands.describe(
        image1="The first image",
        image2="The second image",
        prompt="How to blend them (optional); flags such as --ar 16:9 work here too",
        aspect_ratio="Shape of the image",
        size="Resolution",
        model="Which image model to use (each takes a different number of images)",
        n=N_HELP,
    )
    @app_commands.choices(aspect_ratio=ratios, size=sizes, model=models)
    async def blend(
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        prompt: str = "",
        aspect_ratio: Optional[str] = None,  # noqa: UP045
        size: Optional[str] = None,  # noqa: UP045
        model: Optional[str] = None,  # noqa: UP045
        n: Optional[app_commands.Range[int, 1, MAX_VARIATIONS]] = None,  # noqa: UP045
        image3: Optional[discord.Attachment] = None,  # noqa: UP045
        image4: Optional[discord.Attachment] = None,  # noqa: UP045
        image5: Optional[discord.Attachment] = None,  # noqa: UP045
        image6: Optional[discord.Attachment] = None,  # noqa: UP045
        image7: Optional[discord.Attachment] = None,  # noqa: UP045
        image8: Optional[discord.Attachment] = None,  # noqa: UP045
        image9: Optional[discord.Attachment] = None,  # noqa: UP045
        image10: Optional[discord.Attachment] = None,  # noqa: UP045
        image11: Optional[discord.Attachment] = None,  # noqa: UP045
        image12: Optional[discord.Attachment] = None,  # noqa: UP045
        image13: Optional[discord.Attachment] = None,  # noqa: UP045
        image14: Optional[discord.Attachment] = None,  # noqa: UP045
        image15: Optional[discord.Attachment] = None,  # noqa: UP045
        image16: Optional[discord.Attachment] = None,  # noqa: UP045
    ) -> None:
        typed = forms.ImagineOptions(
            prompt=prompt, model=model, aspect_ratio=aspect_ratio, size=size, n=n
        )
        images = [
            image1,
            image2,
            image3,
            image4,
            image5,
            image6,
            image7,
            image8,
            image9,
            image10,
            image11,
            image12,
            image13,
            image14,
            image15,
            image16,
        ]
        await _handlers(interaction).blend(interaction, typed, images)
