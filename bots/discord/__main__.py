"""`python -m bots.discord`: the Discord adapter alone in one process."""

from __future__ import annotations

from bots.runner import main

raise SystemExit(main("discord"))
