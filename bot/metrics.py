"""Prometheus metrics, one registry per app (no global registry: two apps in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "siyu_requests", "Callback requests by endpoint and HTTP status", ["endpoint", "status"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "siyu_rejected_requests", "Callbacks refused, by reason", ["reason"], registry=self.registry
        )
        self.handler_latency = Histogram(
            "siyu_handler_seconds", "Time spent in each handler", ["handler"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.dedupe_hits = Counter(
            "siyu_dedupe_hits", "Deliveries recognised as retries of one already taken", registry=self.registry
        )
        self.store_errors = Counter(
            "siyu_store_errors", "Callbacks answered without the shared store (Redis unreachable)",
            registry=self.registry,
        )
        self.late_replies = Counter(
            "siyu_late_replies", "Answers that missed the reply deadline and were pushed later", registry=self.registry
        )
        self.log_rows_set_aside = Counter(
            "siyu_log_rows_set_aside", "Rows the database refused, set aside instead of retried (bot/storage)",
            registry=self.registry,
        )
        self.unlogged_answers = Counter(
            "siyu_unlogged_answers", "Callbacks answered before their log rows were committed (database too slow)",
            registry=self.registry,
        )
        self.readiness_checks = Counter(
            "siyu_readiness_checks", "Readiness checks run (probes within a second share one)", registry=self.registry
        )
        self.unknown_events = Counter(
            "siyu_unknown_events", "Callbacks of event types the bot does not know (answered 200)",
            ["endpoint", "type"], registry=self.registry,
        )
        self.api_errors = Counter(
            "siyu_api_errors", "Outbound WeChat API errors by path and errcode", ["path", "errcode"],
            registry=self.registry,
        )
        self.announce_deliveries = Gauge(
            "siyu_announce_deliveries", "Announcement deliveries of the last day's runs, by state (read at scrape)",
            ["campaign", "slot", "status"], registry=self.registry,
        )
        # Set at scrape from the pool watch's last figures (bot/offers/watch.py; the pass is an arq cron job).
        self.group_pool_places_left = Gauge(
            "siyu_group_pool_places_left", "Places left in a group pool's open groups", ["pool"], registry=self.registry
        )
        self.group_pool_low = Gauge(
            "siyu_group_pool_low", "1 while a group pool is below its warn_below places", ["pool"],
            registry=self.registry,
        )

        # Bound children by label, looked up once: `labels()` costs ~20 µs a call on the hot path.
        self._handler_children: dict[str, Histogram] = {}
        self._request_children: dict[tuple[str, int], Counter] = {}

    def observe_handler(self, name: str, seconds: float, handled: bool) -> None:
        child = self._handler_children.get(name)
        if child is None:
            child = self._handler_children[name] = self.handler_latency.labels(name)
        child.observe(seconds)

    def count_request(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(endpoint, str(status))
        child.inc()

    def count_api_error(self, path: str, errcode: int) -> None:
        self.api_errors.labels(path, str(errcode)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
