"""Describe: a text model reads an image and suggests prompts that would make it again."""

from __future__ import annotations

import json
import re
from typing import Any

from core.options import FLAGS

SUGGESTIONS = 4  # at most, each with a button that makes it
# each prompt at most: it has to fit, whole, where it is shown (a Discord embed field holds
# 1024 characters) and in the button that makes it (a Slack button's value holds 2000)
PROMPT_CHARS = 1000
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
_JSONISH = re.compile(r"^\s*[\[\]{}\"]")  # a line of JSON the answer was cut off in
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# a flag of another bot's ("--stylize 250"), which /imagine would refuse: kept as words
_FOREIGN_FLAG = re.compile(r"(?<!\S)--(?=[A-Za-z])(?!(?:" + "|".join(FLAGS) + r")\b)")


def _string(literal: str) -> str:
    try:
        return str(json.loads(literal))
    except ValueError:  # an escape JSON does not know: the words as written
        return literal[1:-1]


def suggestions(answer: str, max_chars: int = PROMPT_CHARS) -> list[str]:
    """The prompts in a model's answer: its JSON array or, from a model that wrote prose
    anyway, its lines (not those of JSON cut off). Blank and repeated ones are dropped;
    each is cut to `max_chars`."""
    text = _FENCE.sub("", answer.strip())
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if isinstance(found, dict):  # {"prompts": [...]}: the one list in it
        found = next((v for v in found.values() if isinstance(v, list)), None)
    if isinstance(found, list):
        items = [item for item in found if isinstance(item, str)]
    elif text.startswith("["):  # an array cut off (out of tokens): its whole strings
        items = [_string(whole) for whole in _JSON_STRING.findall(text)]
    else:
        lines = (line for line in text.splitlines() if not _JSONISH.match(line))
        items = [_NUMBERED.sub("", line) for line in lines]
    kept: list[str] = []
    for item in items:
        prompt = " ".join(_FOREIGN_FLAG.sub("", item).split())[:max_chars].strip()
        if prompt and prompt not in kept:
            kept.append(prompt)
    return kept[:SUGGESTIONS]
