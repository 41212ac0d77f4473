"""The Slack adapter: `/imagine`, mentions, threads and buttons over the core service."""

from __future__ import annotations

from bots.slack.app import SlackApp, create_app

__all__ = ["SlackApp", "create_app"]
