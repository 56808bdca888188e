"""Channel adapters: verify, decrypt and parse a platform's callback into `bot.events.Event`."""

from bot.channels.errors import RejectedRequest

__all__ = ["RejectedRequest"]
