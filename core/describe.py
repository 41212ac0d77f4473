"""Describe: a text model reads an image and suggests prompts that would make it again."""

from __future__ import annotations

import json
import re
from typing import Any

from core.options import FLAGS

SUGGESTIONS = 4  # at most, each with a button that makes it
INSTRUCTION = (
    f"Write up to {SUGGESTIONS} different prompts an image model could use to make this "
    "image again: its subject, style, medium, lighting, composition and colours, one or two "
    "sentences each. Answer only with a JSON array of strings."
)
# Google's OpenAPI subset, which every relay passes on
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "ARRAY",
    "items": {"type": "STRING"},
    "maxItems": SUGGESTIONS,
}
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_NUMBERED = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
# a flag of another bot's ("--stylize 250"), which /imagine would refuse: kept as words
_FOREIGN_FLAG = re.compile(r"(?<!\S)--(?=[A-Za-z])(?!(?:" + "|".join(FLAGS) + r")\b)")


def suggestions(answer: str, max_chars: int) -> list[str]:
    """The prompts in a model's answer: its JSON array or, from a model that wrote prose
    anyway, its lines. Blank and repeated ones are dropped; each is cut to `max_chars`."""
    text = _FENCE.sub("", answer.strip())
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if isinstance(found, dict):  # {"prompts": [...]}: the one list in it
        found = next((v for v in found.values() if isinstance(v, list)), None)
    if isinstance(found, list):
        items = [item for item in found if isinstance(item, str)]
    else:
        items = [_NUMBERED.sub("", line) for line in text.splitlines()]
    kept: list[str] = []
    for item in items:
        prompt = " ".join(_FOREIGN_FLAG.sub("", item).split())[:max_chars].strip()
        if prompt and prompt not in kept:
            kept.append(prompt)
    return kept[:SUGGESTIONS]
