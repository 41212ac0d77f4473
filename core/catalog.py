"""The image models and what each supports, loaded from data an operator can extend."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import UserFacingError
from core.providers import Provider

SIZES = ("0.5K", "1K", "2K", "4K")
DEFAULT_SIZE = "1K"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Google's current id; `provider_ids` names what other providers call the same model
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    provider_ids: dict[str, str] = {}
    use: str = ""
    # the sizes a user can ask for; each provider spells them its own way on the wire
    sizes: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    max_reference_images: int = Field(ge=0)
    max_object_images: int | None = None
    max_people_images: int | None = None
    # Gemini 3 models return thoughtSignature values that must be sent back.
    thought_signatures: bool = False
    output_tokens: dict[str, int] = {}
    price_per_image: dict[str, float] = {}

    @field_validator("sizes", mode="before")
    @classmethod
    def _size_names(cls, value: Any) -> Any:
        # older model files mapped each size to a spelling; the provider spells sizes now
        return tuple(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check(self) -> Model:
        unknown = [size for size in self.sizes if size not in SIZES]
        if unknown:
            raise ValueError(f"unknown size {unknown[0]!r}; sizes are {', '.join(SIZES)}")
        if not self.sizes:
            raise ValueError("a model needs at least one size")
        if not self.aspect_ratios:
            raise ValueError("a model needs at least one aspect ratio")
        return self

    @property
    def default_size(self) -> str:
        return DEFAULT_SIZE if DEFAULT_SIZE in self.sizes else next(iter(self.sizes))

    @property
    def size_names(self) -> list[str]:
        """Sizes in ascending order."""
        return [size for size in SIZES if size in self.sizes]

    def wire_id(self, provider: str) -> str:
        """The id to send to `provider` (a provider name such as "google" or "proxy")."""
        return self.provider_ids.get(provider, self.id)

    def price(self, size: str) -> float:
        return self.price_per_image.get(size, 0.0)

    def estimate_cost(self, size: str, images: int, image_tokens: int = 0) -> float:
        """Dollars for a result: from the image tokens billed when the API reports them,
        else from the number of images, at the catalog's price per image."""
        per_image_tokens = self.output_tokens.get(size)
        if image_tokens and per_image_tokens:
            return self.price(size) * image_tokens / per_image_tokens
        return self.price(size) * images

    def names(self) -> tuple[str, ...]:
        return (self.id, *self.provider_ids.values(), *self.aliases)


class Catalog:
    """The models on offer. `retired` are models the provider has shut down: their names
    are still known, so asking for one gets a sentence naming what replaced it."""

    def __init__(self, models: Iterable[Model], retired: Iterable[tuple[Model, str]] = ()) -> None:
        self.models: tuple[Model, ...] = tuple(models)
        if not self.models:
            raise ValueError("the catalog has no models")
        self._by_name: dict[str, Model] = {}
        for model in self.models:
            for name in model.names():
                self._by_name[name.lower()] = model
        self._retired: dict[str, str] = {
            name.lower(): why for model, why in retired for name in model.names()
        }
        self.default: Model = self.models[0]

    def find(self, name: str) -> Model | None:
        return self._by_name.get(name.strip().lower())

    def get(self, name: str) -> Model:
        model = self.find(name)
        if model is None:
            retired = self._retired.get(name.strip().lower())
            if retired is not None:
                raise UserFacingError(retired)
            raise UserFacingError(
                f"There is no model called {name!r}: choose one of {self.describe_choices()}."
            )
        return model

    def describe_choices(self) -> str:
        return ", ".join(
            f"`{m.aliases[0]}` ({m.name})" if m.aliases else f"`{m.id}`" for m in self.models
        )

    def supporting_size(self, size: str) -> list[Model]:
        return [m for m in self.models if size in m.sizes]

    def supporting_ratio(self, ratio: str) -> list[Model]:
        return [m for m in self.models if ratio in m.aspect_ratios]


def _read_toml(text: str, origin: str) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin} is not valid TOML: {exc}") from exc
    entries = data.get("models", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{origin} must hold a list of [[models]] tables")
    return entries


def _shipped_id(entries: dict[str, dict[str, Any]], name: str) -> str | None:
    wanted = name.lower()
    for model_id, entry in entries.items():
        names = [model_id, *entry.get("aliases", ()), *entry.get("provider_ids", {}).values()]
        if wanted in (str(n).lower() for n in names):
            return model_id
    return None


def load_catalog(
    extra_file: Path | None = None,
    default: str | None = None,
    provider: Provider | None = None,
) -> Catalog:
    """The shipped models, with entries from `extra_file` added or merged in by id; with a
    `provider`, the models it has shut down are set apart.

    Raises ValueError with a readable message when a file or an entry is wrong.
    """
    shipped = resources.files("core").joinpath("models.toml").read_text("utf-8")
    entries = {e["id"]: e for e in _read_toml(shipped, "core/models.toml")}
    if extra_file is not None:
        try:
            text = extra_file.read_text("utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {extra_file}: {exc.strerror}") from exc
        for entry in _read_toml(text, str(extra_file)):
            model_id = entry.get("id")
            if not isinstance(model_id, str):
                raise ValueError(f"{extra_file}: every [[models]] entry needs an id")
            # an entry naming a shipped model by an old id or an alias changes that model
            shipped_id = _shipped_id(entries, model_id)
            if shipped_id is not None and shipped_id != model_id:
                entry = {k: v for k, v in entry.items() if k != "id"}
                model_id = shipped_id
            entries[model_id] = {**entries.get(model_id, {}), **entry}
    models = []
    for model_id, entry in entries.items():
        try:
            models.append(Model.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            raise ValueError(f"model {model_id!r}: {where}: {first['msg']}") from exc
    offered, retired = _split_retired(models, provider)
    catalog = Catalog(offered, retired)
    if default is not None:
        try:
            catalog.default = catalog.get(default)
        except UserFacingError as exc:
            raise ValueError(str(exc)) from None
    return catalog


def _split_retired(
    models: list[Model], provider: Provider | None
) -> tuple[list[Model], list[tuple[Model, str]]]:
    if provider is None:
        return models, []
    offered, retired = [], []
    for model in models:
        retirement = provider.retired.get(model.wire_id(provider.name))
        if retirement is None:
            offered.append(model)
            continue
        successor = next((m for m in models if retirement.successor in m.names()), None)
        instead = successor.aliases[0] if successor and successor.aliases else retirement.successor
        retired.append(
            (
                model,
                f"{model.name} was shut down by {provider.title} on {retirement.since}: "
                f"use `--model {instead}` instead.",
            )
        )
    return offered, retired
