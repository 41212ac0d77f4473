"""A service in its own process, for killing mid-job: deliveries go to a JSON-lines file.

python -m tests.core.crash_child DELIVERIES_FILE [PROMPT]  (settings from the environment)
With a prompt it submits one job first; either way it runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from core.config import load_settings
from core.jobs import Job, Outcome, Progress, Request
from core.runtime import open_service


class FileAdapter:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def progress(self, job: Job, update: Progress) -> None:
        pass

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        line = {"job": job.id, "images": len(outcome.images), "error": outcome.error}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return [f"file:{job.id}"]


async def main(deliveries: Path, prompt: str | None) -> None:
    async with open_service(load_settings(_env_file=None)) as service:
        service.register("test", FileAdapter(deliveries))
        await service.start()
        if prompt:
            submitted = await service.submit(
                Request(
                    platform="test",
                    tenant="T1",
                    user_id="U1",
                    text=prompt,
                    idempotency_key="crash-test",
                )
            )
            print(f"submitted {submitted.job.id}", flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
