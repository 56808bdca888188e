"""Coupon claims on PostgreSQL, many per round trip.

A campaign's burst of 新人 is many coroutines of one process claiming at once. Each claim as
its own statement costs a pool checkout and a round trip, and the Python around them (the
SQLAlchemy pool and result machinery) costs about as much as PostgreSQL's work: on a small
server that, not locking, is the ceiling. So the claims waiting while a statement is in flight
go out together in the next one (natural batching: no timer, a lone claim leaves at once),
one statement for up to MAX_CLAIMS claims, each claim's answer read from its own row.

A claim this statement does not settle (an eligibility rule to check, every free code locked
by other claimers, a cause claimed meanwhile by another process) comes back unsettled, and the
caller runs the single-claim statement for it (bot.offers.service), which has the whole logic.
Two claims on one (batch, contact) or one (batch, cause) never share a statement: the upsert
could not count both, and the cause is unique per batch.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


#: Claims per statement: bounds one statement's locks and its size.
MAX_CLAIMS = 64
#: Lanes (connections sending claim statements) at once per process: a second lane keeps claims
#: moving while one statement waits on a slow commit; more only split the same burst into smaller
#: statements (1 and 2 measured alike with bench/coupons.py on 2 cores, within the noise).
MAX_LANES = 2

_CLAIM_MANY = text("""
WITH req AS (
    SELECT * FROM unnest(
        CAST(:batch AS TEXT[]), CAST(:cause_key AS TEXT[]), CAST(:channel AS TEXT[]), CAST(:account AS TEXT[]),
        CAST(:external_id AS TEXT[]), CAST(:source AS TEXT[]), CAST(:now AS TIMESTAMPTZ[])
    ) WITH ORDINALITY AS r(batch, cause_key, channel, account, external_id, source, now, n)
), claim AS (
    SELECT r.*, b.id AS batch_id, b.title, b.per_customer, b.closed, b.valid_to, b.eligibility,
           e.code AS earlier_code, e.expires_at AS earlier_expires_at,
           CASE WHEN b.valid_days IS NULL THEN b.valid_to
                ELSE LEAST(r.now + b.valid_days * INTERVAL '1 day', b.valid_to) END AS expires_at,
           (NOT b.closed AND (b.valid_to IS NULL OR b.valid_to > r.now) AND b.eligibility IN ('{}', '')
            AND e.code IS NULL) AS go
    FROM req r
    JOIN coupon_batches b ON b.name = r.batch
    -- LATERAL ... LIMIT 1 (kept a nested loop): one unique-index probe per claim, whatever the
    -- planner's row estimates say (a hash join over all codes grows with the table).
    LEFT JOIN LATERAL (
        SELECT code, expires_at FROM coupon_codes WHERE batch_id = b.id AND cause_key = r.cause_key LIMIT 1
    ) e ON true
), ranked AS (
    SELECT n, batch_id, row_number() OVER (PARTITION BY batch_id ORDER BY n) AS rank FROM claim WHERE go
), locked AS MATERIALIZED (
    SELECT w.batch_id, free.id
    FROM (SELECT batch_id, count(*) AS wanted FROM ranked GROUP BY batch_id) w
    CROSS JOIN LATERAL (
        SELECT c.id FROM coupon_codes c WHERE c.batch_id = w.batch_id AND c.status = 'available'
        LIMIT w.wanted FOR UPDATE SKIP LOCKED
    ) free
), slot AS MATERIALIZED (
    SELECT ranked.n, l.id
    FROM (SELECT batch_id, id, row_number() OVER (PARTITION BY batch_id ORDER BY id) AS rank FROM locked) l
    JOIN ranked ON ranked.batch_id = l.batch_id AND ranked.rank = l.rank
), holding AS (
    INSERT INTO coupon_holdings (batch_id, channel, account, external_id, held)
    SELECT claim.batch_id, claim.channel, claim.account, claim.external_id, 1
    FROM claim JOIN slot ON slot.n = claim.n
    ON CONFLICT (batch_id, channel, account, external_id)
    DO UPDATE SET held = coupon_holdings.held + 1
    WHERE coupon_holdings.held < (SELECT b.per_customer FROM coupon_batches b WHERE b.id = EXCLUDED.batch_id)
    RETURNING batch_id, channel, account, external_id
), issued AS (
    UPDATE coupon_codes c
    SET status = 'issued', channel = claim.channel, account = claim.account, external_id = claim.external_id,
        cause_key = claim.cause_key, issued_at = claim.now, expires_at = claim.expires_at
    FROM slot
    JOIN claim ON claim.n = slot.n
    JOIN holding ON holding.batch_id = claim.batch_id AND holding.channel = claim.channel
                AND holding.account = claim.account AND holding.external_id = claim.external_id
    -- By primary key only: the row is ours (locked by `locked` while available); a status test
    -- here lets the planner pick the partial index and scan every free code of the batch.
    WHERE c.id = slot.id
    RETURNING slot.n, c.code, c.expires_at
), recorded AS (
    INSERT INTO funnel_events (step, channel, account, external_id, cause_key, source, detail, created_at)
    SELECT 'coupon_issued', claim.channel, claim.account, claim.external_id,
           left(claim.batch || ':' || claim.cause_key, 200), claim.source,
           -- the text json.dumps gives on SQLite: {"batch": ..., "code": ...}
           '{"batch": ' || to_json(claim.batch)::text || ', "code": ' || to_json(issued.code)::text || '}',
           claim.now
    FROM issued JOIN claim ON claim.n = issued.n
    ON CONFLICT DO NOTHING
)
SELECT req.n, claim.batch_id AS id, claim.title, claim.per_customer, claim.closed, claim.valid_to,
       claim.eligibility, claim.earlier_code, claim.earlier_expires_at,
       slot.id IS NOT NULL AS slotted, issued.code IS NOT NULL AS held, issued.code, issued.expires_at
FROM req
LEFT JOIN claim ON claim.n = req.n
LEFT JOIN slot ON slot.n = req.n
LEFT JOIN issued ON issued.n = req.n
""")


@dataclass(frozen=True, slots=True)
class Claim:
    batch: str
    cause_key: str
    channel: str
    account: str
    external_id: str
    source: str | None
    now: datetime

    def keys(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (self.batch, self.channel, self.account, self.external_id), (self.batch, self.cause_key)


Waiting = tuple[Claim, "asyncio.Future[Row[Any] | None]"]


class Coalescer:
    """Claims of one engine, sent in as few statements as the database's pace allows.

    A lane is one pooled connection sending the claims waiting, statement after statement,
    until none wait (then it goes back to the pool): checking a connection out (and the pool's
    pre-ping) is paid once per burst, not once per statement.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.waiting: list[Waiting] = []
        self.lanes = 0
        #: The lane tasks running (held so they are not collected while callers await their futures).
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, claim: Claim) -> Row[Any] | None:
        future: asyncio.Future[Row[Any] | None] = asyncio.get_running_loop().create_future()
        self.waiting.append((claim, future))
        self._open_lane()
        return await future

    def _open_lane(self) -> None:
        if self.lanes >= MAX_LANES:
            return
        self.lanes += 1
        lane = asyncio.get_running_loop().create_task(self._lane())
        self._tasks.add(lane)
        lane.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Waiting]:
        taken: list[Waiting] = []
        rest: list[Waiting] = []
        seen: set[tuple[str, ...]] = set()
        for item in self.waiting:
            keys = item[0].keys()
            if len(taken) < MAX_CLAIMS and not (seen & set(keys)):
                seen.update(keys)
                taken.append(item)
            else:
                rest.append(item)
        self.waiting = rest
        return taken

    async def _lane(self) -> None:
        taken: list[Waiting] = []
        try:
            async with self.engine.connect() as connection:
                # Autocommit: each statement is its own transaction, no BEGIN/COMMIT round trips.
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                while True:
                    if not self.waiting:
                        await asyncio.sleep(0)  # the callers just answered may claim again at once
                    taken = self._take()
                    if not taken:
                        return
                    try:
                        rows = await _run(connection, [claim for claim, _ in taken])
                    except IntegrityError:
                        # A cause claimed meanwhile by another process: each claim of this statement
                        # goes the single way, which answers with that first issue.
                        rows = {}
                    for n, (_, future) in enumerate(taken, start=1):
                        if not future.done():
                            future.set_result(rows.get(n))
                    taken = []
        except Exception as error:  # noqa: BLE001 - the callers of this statement hear it
            for _, future in taken:
                if not future.done():
                    future.set_exception(error)
        finally:
            for _, future in taken:  # cancelled mid-statement
                if not future.done():
                    future.cancel()
            self.lanes -= 1
            if self.waiting:
                self._open_lane()  # claims that came while this lane was failing or closing still get one


async def _run(connection: AsyncConnection, claims: list[Claim]) -> dict[int, Row[Any]]:
    params = {
        "batch": [c.batch for c in claims], "cause_key": [c.cause_key for c in claims],
        "channel": [c.channel for c in claims], "account": [c.account for c in claims],
        "external_id": [c.external_id for c in claims], "source": [c.source for c in claims],
        "now": [c.now for c in claims],
    }
    result = await connection.execute(_CLAIM_MANY, params)
    return {row.n: row for row in result}


#: One Coalescer per engine and event loop, living exactly as long as the engine (weak keys): the
#: claims to batch are those of one connection pool, and every caller of issue_coupon holds only
#: its session factory, so the engine is the one owner they share.
_COALESCERS: weakref.WeakKeyDictionary[AsyncEngine, dict[asyncio.AbstractEventLoop, Coalescer]] = (
    weakref.WeakKeyDictionary()
)


def coalescer_for(engine: AsyncEngine) -> Coalescer:
    loops = _COALESCERS.setdefault(engine, {})
    loop = asyncio.get_running_loop()
    found = loops.get(loop)
    if found is None:
        found = loops[loop] = Coalescer(engine)
    return found
