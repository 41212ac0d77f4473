"""The option grammar every adapter shares, and its validation against the catalog."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from core.catalog import SIZES, Catalog, Model
from core.errors import UserFacingError

FLAGS = {
    "ar": "aspect_ratio",
    "aspect": "aspect_ratio",
    "size": "size",
    "model": "model",
    "temp": "temperature",
    "text": "text",
    "n": "n",
}
VALUELESS = {"text"}
FLAG_LIST = "--ar, --size, --model, --temp, --n or --text"
EXAMPLES = {
    "aspect_ratio": "--ar 16:9",
    "size": "--size 2K",
    "model": "--model pro",
    "temperature": "--temp 0.4",
    "n": "--n 4",
}
TEMPERATURE_ERROR = "`--temp` must be a number from 0 to 1 (for example `--temp 0.4`), not `{raw}`."
MAX_VARIATIONS = 4  # images one request may ask for, each its own generation
VARIATIONS_ERROR = (
    f"`--n` is how many images to make at once, a whole number from 1 to {MAX_VARIATIONS} "
    "(for example `--n 4`), not `{raw}`."
)
# Slack and macOS turn "--" into an em or en dash as people type.
_DASHES = ("--", "\u2014", "\u2013")
_TOKEN = re.compile(r"\S+")
_RATIO = re.compile(r"^(\d{1,2})\s*[:xX\u00d7/]\s*(\d{1,2})$")


@dataclass(frozen=True)
class Options:
    """What a user asked for; None means "not said"."""

    model: str | None = None
    aspect_ratio: str | None = None
    size: str | None = None
    temperature: float | None = None
    text: bool | None = None
    n: int | None = None  # variations: that many images, each its own generation

    def over(self, base: Options) -> Options:
        """These options, with anything not said taken from `base`."""
        return replace(
            base,
            **{k: v for k, v in self.__dict__.items() if v is not None},
        )


@dataclass(frozen=True)
class ResolvedOptions:
    """Options checked against a model: what a generation will be asked for."""

    model: Model
    aspect_ratio: str | None
    size: str
    temperature: float | None
    with_text: bool
    count: int = 1  # images to make, each its own job

    def describe(self) -> str:
        parts = [self.model.name]
        if self.aspect_ratio:
            parts.append(self.aspect_ratio)
        parts.append(self.size)
        if self.temperature is not None:
            parts.append(f"temp {self.temperature:g}")
        if self.with_text:
            parts.append("with text")
        return " · ".join(parts)

    def as_options(self) -> Options:
        return Options(
            model=self.model.id,
            aspect_ratio=self.aspect_ratio,
            size=self.size,
            temperature=self.temperature,
            text=self.with_text,
            n=self.count if self.count > 1 else None,
        )


def parse(text: str) -> tuple[str, Options]:
    """Split `text` into the prompt and the options typed in it (anywhere in the text)."""
    values: dict[str, object] = {}
    cut: list[tuple[int, int]] = []
    tokens = list(_TOKEN.finditer(text))
    index = 0
    while index < len(tokens):
        token = tokens[index]
        flag = _flag_name(token.group())
        index += 1
        if flag is None:
            continue
        name, _, inline_value = flag.partition("=")
        field = FLAGS[name.lower()]
        if field in values:
            raise UserFacingError(f"`--{name}` is given twice: keep one.")
        end = token.end()
        if name.lower() in VALUELESS:
            if inline_value:
                raise UserFacingError(f"`--{name}` takes no value: write just `--{name}`.")
            values[field] = True
        else:
            raw = inline_value
            if not raw:
                following = tokens[index] if index < len(tokens) else None
                if following is None or _flag_name(following.group()) is not None:
                    raise UserFacingError(
                        f"`--{name}` needs a value, for example `{EXAMPLES[field]}`."
                    )
                raw = following.group()
                end = following.end()
                index += 1
            values[field] = _parse_value(field, name, raw)
        cut.append((token.start(), end))
    prompt = _without(text, cut)
    return prompt, Options(**values)  # type: ignore[arg-type]


def _flag_name(token: str) -> str | None:
    """The flag spelled by `token` (without dashes), None for ordinary words.

    "--" followed by an unknown name is an error; an em or en dash followed by an
    unknown name is just punctuation in the prompt.
    """
    for dash in _DASHES:
        if token.startswith(dash) and len(token) > len(dash):
            body = token[len(dash) :]
            if not body[0].isalpha():
                return None
            if body.partition("=")[0].lower() in FLAGS:
                return body
            if dash == "--":
                raise UserFacingError(f"`{token}` is not an option: use {FLAG_LIST}.")
            return None
    return None


def _parse_value(field: str, flag: str, raw: str) -> object:
    if field == "aspect_ratio":
        match = _RATIO.match(raw)
        if not match:
            raise UserFacingError(f"`--{flag}` wants a ratio like 16:9, and `{raw}` is not one.")
        return f"{int(match.group(1))}:{int(match.group(2))}"
    if field == "size":
        size = _normalise_size(raw)
        if size is None:
            raise UserFacingError(
                f"`--size` must be one of {', '.join(SIZES)}, and `{raw}` is not."
            )
        return size
    if field == "temperature":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise UserFacingError(TEMPERATURE_ERROR.format(raw=raw))
        return value
    if field == "n":
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_VARIATIONS):
            raise UserFacingError(VARIATIONS_ERROR.format(raw=raw))
        return int(raw)
    return raw  # model: checked against the catalog in resolve()


def _normalise_size(raw: str) -> str | None:
    spelled = raw.strip().upper()
    aliases = {".5K": "0.5K", "512": "0.5K", "1024": "1K", "2048": "2K", "4096": "4K"}
    spelled = aliases.get(spelled, spelled)
    return spelled if spelled in SIZES else None


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, start = [], 0
    for begin, end in spans:
        pieces.append(text[start:begin])
        start = end
    pieces.append(text[start:])
    joined = "".join(pieces)
    # removing flags leaves doubled spaces; keep the line breaks people typed
    lines = (re.sub(r"[ \t]{2,}", " ", line).strip() for line in joined.splitlines())
    return "\n".join(lines).strip()


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _try(models: list[Model]) -> str:
    choices = [f"`--model {m.aliases[0] if m.aliases else m.id}`" for m in models]
    return " or ".join(choices)


def resolve(
    typed: Options, catalog: Catalog, defaults: Options = Options(), reference_images: int = 0
) -> ResolvedOptions:
    """Check what the user typed against the catalog, filling the rest from `defaults`.

    Anything typed that the model cannot do is an error naming the fix; a default the
    chosen model cannot do (a user's saved 4K after `--model 2.5-flash`) quietly gives
    way to the model's own default.
    """
    if typed.model is not None:
        model = catalog.get(typed.model)
    else:
        model = (catalog.find(defaults.model) if defaults.model else None) or catalog.default

    if typed.size is not None:
        if typed.size not in model.sizes:
            others = [m for m in catalog.supporting_size(typed.size) if m is not model]
            hint = f": try {_try(others)}" if others else ""
            raise UserFacingError(
                f"{typed.size} is not available on {model.name}, which makes "
                f"{_join(model.size_names)}{' only' if len(model.sizes) == 1 else ''}{hint}."
            )
        size = typed.size
    else:
        size = defaults.size if defaults.size in model.sizes else model.default_size

    if typed.aspect_ratio is not None:
        ratio: str | None = typed.aspect_ratio
        if ratio not in model.aspect_ratios:
            others = [m for m in catalog.supporting_ratio(ratio) if m is not model]
            if not others:
                known = sorted({r for m in catalog.models for r in m.aspect_ratios}, key=_ratio_key)
                raise UserFacingError(
                    f"{ratio} is not an aspect ratio any model makes: choose one of "
                    f"{', '.join(known)}."
                )
            raise UserFacingError(
                f"{ratio} is not available on {model.name}, which makes "
                f"{', '.join(model.aspect_ratios)}: try {_try(others)}."
            )
    else:
        ratio = defaults.aspect_ratio if defaults.aspect_ratio in model.aspect_ratios else None

    check_reference_count(model, reference_images, catalog)
    if typed.temperature is not None:
        # typed options may come from a form rather than this grammar: check them here too
        _parse_value("temperature", "temp", str(typed.temperature))
    temperature = typed.temperature if typed.temperature is not None else defaults.temperature
    with_text = bool(typed.text if typed.text is not None else defaults.text)
    if typed.n is not None:
        _parse_value("n", "n", str(typed.n))
    count = typed.n if typed.n is not None else defaults.n or 1
    return ResolvedOptions(model, ratio, size, temperature, with_text, min(count, MAX_VARIATIONS))


def check_reference_count(model: Model, count: int, catalog: Catalog) -> None:
    if count <= model.max_reference_images:
        return
    roomier = [m for m in catalog.models if m.max_reference_images >= count]
    hint = (
        f" or try {_try(roomier)} (up to {max(m.max_reference_images for m in roomier)})"
        if roomier
        else ""
    )
    raise UserFacingError(
        f"{model.name} takes at most {model.max_reference_images} reference images and "
        f"this request has {count}: attach fewer{hint}."
    )


def describe_set(options: Options, catalog: Catalog) -> str:
    """What a layer of saved defaults sets, and nothing it leaves to the next one:
    `Gemini 3 Pro Image · 16:9 · 4 images a request`."""
    model = catalog.find(options.model or "")
    said = [
        model.name if model else options.model,
        options.aspect_ratio,
        options.size,
        f"{options.n} images a request" if options.n and options.n > 1 else None,
    ]
    return " · ".join(s for s in said if s)


def check_prompt(prompt: str, max_chars: int, *, has_images: bool = False) -> str:
    prompt = prompt.strip()
    if not prompt:
        raise UserFacingError(
            "Tell me what to draw, for example `a lighthouse at dusk --ar 16:9`."
            if not has_images
            else "Tell me what to do with the image, for example `make the sky stormy`."
        )
    if len(prompt) > max_chars:
        raise UserFacingError(
            f"The prompt is {len(prompt):,} characters long; the limit is {max_chars:,}: "
            "shorten it."
        )
    return prompt


def _ratio_key(ratio: str) -> float:
    width, _, height = ratio.partition(":")
    return int(width) / int(height)
