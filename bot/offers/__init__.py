"""Coupons (batches, codes, issuing, redemption) and group pools (群活码): offers that really exist.

`service` is the API other domains and the handlers call; `models` the tables; `repository`
the statements; `cli` the `coupon`, `group` and `demo` verbs.
"""
