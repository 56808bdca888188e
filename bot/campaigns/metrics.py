"""Announcement progress in /metrics: deliveries by state, read from the database at scrape.

Workers are other processes (arq), so the web app can't count in memory; the database
has the truth, and one GROUP BY over the last day's runs is cheap (index on run, status).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge

from bot.campaigns.runs import Sessions, counts_by_status

WINDOW = timedelta(days=1)


async def refresh_delivery_counts(gauge: Gauge, sessions: Sessions) -> None:
    rows = await counts_by_status(sessions, datetime.now(UTC) - WINDOW)
    gauge.clear()
    for campaign, slot, status, count in rows:
        gauge.labels(campaign, slot, status).set(count)
