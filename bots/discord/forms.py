"""What users type into /imagine and the Edit form, checked before anything is acknowledged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.catalog import Catalog
from core.options import Options, check_prompt, parse, resolve

CHANGE_FIELD = "change"


@dataclass(frozen=True)
class ImagineOptions:
    """The typed options of /imagine (None: not given)."""

    prompt: str
    model: str | None = None
    aspect_ratio: str | None = None
    size: str | None = None
    temperature: float | None = None
    text: bool | None = None
    n: int | None = None

    def options(self) -> Options:
        return Options(
            model=self.model,
            aspect_ratio=self.aspect_ratio,
            size=self.size,
            temperature=self.temperature,
            text=self.text,
            n=self.n,
        )


def precheck(
    text: str,
    typed: Options,
    catalog: Catalog,
    *,
    reference_images: int,
    max_prompt_chars: int,
) -> None:
    """Raise the UserFacingError the service would raise for what was typed, without any I/O.

    Saved per-user defaults are not known here; the service checks them again at submit.
    """
    prompt, flags = parse(text)
    resolve(typed.over(flags), catalog, Options(), reference_images)
    check_prompt(prompt, max_prompt_chars, has_images=reference_images > 0)


def form_values(data: Mapping[str, Any] | None) -> dict[str, str]:
    """Text input values of a submitted modal, by custom id (action rows or labels)."""
    values: dict[str, str] = {}
    for row in (data or {}).get("components") or []:
        children: Sequence[Any] = (
            [row["component"]] if isinstance(row.get("component"), dict) else row.get("components")
        ) or []
        for child in children:
            if isinstance(child, dict) and "custom_id" in child and "value" in child:
                values[str(child["custom_id"])] = str(child["value"] or "")
    return values
