"""Weekly flash-sale announcements (周期性爆款): scripts, campaigns, runs and their fan-out on arq.

For chat-ops (`/预告`): `await preview(campaign, sessions=...) -> str`.
"""

from bot.campaigns.commands import preview

__all__ = ["preview"]
