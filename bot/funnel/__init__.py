"""The customer funnel: one row per lifecycle step, attributed to the channel that brought the contact.

`record_step` is what other domains call (greeting, offers, redemption, WeCom group joins);
`report` computes reach → followed → invited → coupon issued → redeemed.
"""

from bot.funnel.steps import STEPS, Step, record_step

__all__ = ["STEPS", "Step", "record_step"]
