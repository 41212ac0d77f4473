"""The app's Home tab: a person's recent images, their settings and this month's usage,
published each time they open it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bots.slack import messages
from bots.slack.commands import permalink
from bots.slack.context import SlackContext
from bots.slack.events import PLATFORM

log = logging.getLogger(__name__)


class Home:
    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx

    async def opened(self, team: str, user: str) -> None:
        """Publish `user`'s Home tab in `team` (best effort: it is shown again next time)."""
        service = self.ctx.service
        try:
            client = await self.ctx.client(team)
            page = await service.history(PLATFORM, team, user)
            links = [await permalink(client, item.job) for item in page.items]
            defaults = await service.user_defaults(PLATFORM, team, user)
            report = await service.usage_report(PLATFORM, team, user)
            view = messages.home_view(
                page,
                links,
                defaults,
                report,
                service.catalog,
                month=datetime.now(UTC).strftime("%B"),
            )
            await client.views_publish(user_id=user, view=view)
        except Exception:
            log.warning("could not publish the Home tab of %s", user, exc_info=True)
