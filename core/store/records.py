"""What the store takes and gives back, and how rows turn into them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.conversations import StoredPart, Turn
from core.jobs import Job
from core.options import Options

JOB_COLUMNS = (
    "seq, id, idempotency_key, kind, platform, tenant, user_id, conversation_id, user_turn_id, "
    "model_turn_id, prompt, options, target, state, attempts, api_calls, paid_runs, "
    "error_message, notice, "
    "output_tokens, total_tokens, cost_usd, created_at, started_at, finished_at, delivered_at, "
    "delivery_attempts, group_id"
)


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    mime_type: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class NewImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    sha256: str  # image_hash(data), worked out once by whoever made it


@dataclass(frozen=True)
class NewJob:
    id: str
    idempotency_key: str
    kind: str
    platform: str
    tenant: str
    user_id: str
    prompt: str
    options: Options
    target: dict[str, Any]


@dataclass(frozen=True)
class JobResult:
    """A finished generation, stored in one transaction with its model turn."""

    state: str  # succeeded | failed
    api_calls: int  # in this run, for the log; the job's total is counted as each call is sent
    parts: Sequence[StoredPart] = ()
    images: Sequence[NewImage] = ()
    model_id: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    notice: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


def image_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_parts(parts: Iterable[StoredPart]) -> str:
    return json.dumps(
        [{k: v for k, v in part.__dict__.items() if v is not None} for part in parts],
        separators=(",", ":"),
    )


def load_parts(raw: str) -> tuple[StoredPart, ...]:
    return tuple(StoredPart(**item) for item in json.loads(raw))


def dump_options(options: Options) -> str:
    return json.dumps({k: v for k, v in options.__dict__.items() if v is not None})


def load_options(raw: str) -> Options:
    return Options(**json.loads(raw))


def turn_of(row: Any) -> Turn:
    return Turn(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=row["role"],
        author_id=row["author_id"],
        parts=load_parts(row["parts"]),
        model_id=row["model_id"],
        created_at=row["created_at"],
    )


def job_of(row: Any) -> Job:
    values = dict(row)
    values["options"] = load_options(values["options"])
    values["target"] = json.loads(values["target"])
    return Job(**values)
