"""`python -m bots.slack`: the Slack adapter alone in one process."""

from __future__ import annotations

from bots.runner import main

raise SystemExit(main("slack"))
