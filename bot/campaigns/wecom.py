"""Announcements on WeCom: add_msg_template tasks the staff member confirms, tracked to each recipient.

WeCom does not let an app message customers directly: it creates a group-message task
(`add_msg_template`) for a staff member (`sender`), who confirms it in the WeCom app; only then
do the customers (chat_type single) or the customer groups (chat_type group) receive it.

1. `build_tasks`: the run's pending deliveries are rendered and grouped by (sender, chat type,
   text) into task rows (`planned`), each delivery pointing at its task. Rows first, API later.
2. `create_tasks`: each planned task is flipped to `creating` (committed) just before the API
   call, then `created` with WeCom's msgid; its deliveries become `awaiting` (those in
   `fail_list`: failed). A task a killed worker left `creating` is looked up in WeCom
   (get_groupmsg_list_v2 + get_groupmsg_task: same text, same sender) and adopted when found,
   created again only when WeCom has no such task: one task per staff member per run.
3. `track`: get_groupmsg_send_result per task moves each recipient to sent / failed; a task
   still unconfirmed after ANNOUNCE_WECOM_REMIND_SECONDS gets one reminder
   (remind_groupmsg_send, else an app message); after ANNOUNCE_WECOM_EXPIRE_SECONDS the rest fail.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError
from jinja2.sandbox import SecurityError
from sqlalchemy import bindparam, func, select, update

from bot.campaigns import runs
from bot.campaigns.delivery import _retryable, render_for, shared_variables
from bot.campaigns.models import AWAITING, FAILED, PENDING, SENDING, SENT, SKIPPED, AnnouncementDelivery, WeComTask
from bot.campaigns.runs import Outcome, utcnow
from bot.storage.db import insert_ignoring_conflicts
from bot.storage.models import Contact
from bot.wechat_api.errors import WeChatApiError
from bot.wecom import api as wecom_api
from bot.wecom.api import MSG_TEMPLATE_MAX_CUSTOMERS

if TYPE_CHECKING:
    from bot.campaigns.delivery import DeliveryRuntime

log = logging.getLogger("siyu.campaigns.wecom")

_tasks = WeComTask.__table__
_deliveries = AnnouncementDelivery.__table__

PLANNED, CREATING, CREATED, DONE, TASK_FAILED = "planned", "creating", "created", "done", "failed"
#: Claimed at a time while building tasks.
BUILD_BATCH = 1000
#: get_groupmsg_send_result status → (delivery state, reason).
SEND_RESULT = {
    1: (SENT, None),
    2: (FAILED, "WeCom: the customer is no longer a contact of the staff member"),
    3: (FAILED, "WeCom: the customer already received a group message today (WeCom's limit)"),
}
FAIL_LIST = "WeCom refused this customer for the task (fail_list: not a contact of the staff member)"


@dataclass(frozen=True)
class WeComTiming:
    remind_after: timedelta
    expire_after: timedelta


def _chat_type(chat_id: str | None) -> str:
    return "group" if chat_id else "single"


async def build_tasks(runtime: DeliveryRuntime, run: Any) -> dict[str, int]:
    """Group the run's pending deliveries into task rows; returns counts of what ended here."""
    library = await runtime.library.acurrent()
    campaign = library.campaign(run.campaign)
    slot = campaign.slot(run.slot)
    script = library.scripts[slot.script]
    shared = shared_variables(library, campaign, slot.name)
    counts: dict[str, int] = defaultdict(int)
    with_coupons = (script.reads("coupons") and await runs.any_coupons_held(runtime.sessions, "wecom")
                    and (lambda segment: script.reads("coupons", segment, "wecom")))
    # A delivery claimed by a job that died before attaching it to a task: claim it again.
    async with runtime.sessions.begin() as session:
        await session.execute(update(_deliveries).where(
            _deliveries.c.run_id == run.id, _deliveries.c.status == SENDING, _deliveries.c.task_id.is_(None)
        ).values(status=PENDING))
    while batch := await runs.claim(runtime.sessions, run.id, 0, 2**62, BUILD_BATCH,
                                    with_coupons=with_coupons):
        outcomes: list[Outcome] = []
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for item in batch:
            if item.opted_out:
                outcomes.append(Outcome(item.id, SKIPPED, "opted out of announcements", item.attempts))
                continue
            if not item.following:
                outcomes.append(Outcome(item.id, SKIPPED, "customer is no longer a contact", item.attempts))
                continue
            try:
                text = render_for(item, script, "wecom", shared)
            except (TemplateError, SecurityError, LookupError) as exc:
                outcomes.append(Outcome(item.id, FAILED, f"script did not render: {exc}", item.attempts + 1))
                continue
            if not text:
                outcomes.append(Outcome(item.id, SKIPPED, "script rendered nothing for this recipient", item.attempts))
            elif run.dry_run:
                outcomes.append(Outcome(item.id, SKIPPED, "dry run: rendered, not sent", item.attempts))
            elif not item.sender:
                outcomes.append(Outcome(item.id, SKIPPED, runs.NO_STAFF, item.attempts))
            else:
                groups[(item.sender, _chat_type(item.chat_id), text)].append(item.id)
        await runs.record(runtime.sessions, outcomes)
        for outcome in outcomes:
            counts[outcome.status] += 1
        if groups:
            await _attach(runtime, run.id, groups)
    return dict(counts)


async def _attach(runtime: DeliveryRuntime, run_id: int, groups: dict[tuple[str, str, str], list[int]]) -> None:
    """Task rows for each (sender, chat type, text), ≤ 10,000 recipients each; deliveries point at them."""
    now = utcnow()
    async with runtime.sessions.begin() as session:
        for (sender, chat_type, text), ids in groups.items():
            digest = hashlib.sha256(text.encode()).hexdigest()[:40]
            part = 0
            while ids:
                key = f"{digest}:{part}"
                await session.execute(insert_ignoring_conflicts(session, _tasks).values(
                    run_id=run_id, sender=sender, chat_type=chat_type, content_key=key, text=text, status=PLANNED,
                    attempts=0, created_at=now, updated_at=now,
                ))
                task_id, status = (await session.execute(select(_tasks.c.id, _tasks.c.status).where(
                    _tasks.c.run_id == run_id, _tasks.c.sender == sender, _tasks.c.chat_type == chat_type,
                    _tasks.c.content_key == key,
                ))).one()
                held = (await session.execute(
                    select(func.count()).where(_deliveries.c.task_id == task_id)
                )).scalar_one()
                room = MSG_TEMPLATE_MAX_CUSTOMERS - held if status == PLANNED else 0
                if room > 0:
                    taken, ids = ids[:room], ids[room:]
                    await session.execute(update(_deliveries).where(_deliveries.c.id.in_(taken))
                                          .values(task_id=task_id, updated_at=now))
                part += 1


async def create_tasks(runtime: DeliveryRuntime, run_id: int) -> int:
    """Create the run's planned tasks in WeCom; returns how many are still to create (retry later)."""
    lease = utcnow() - timedelta(seconds=runtime.claim_lease_seconds)
    async with runtime.sessions() as session:
        stale = (await session.execute(select(_tasks).where(
            _tasks.c.run_id == run_id, _tasks.c.status == CREATING, _tasks.c.updated_at < lease
        ))).all()
    for task in stale:
        await _recover(runtime, task)
    async with runtime.sessions() as session:
        planned = (await session.execute(select(_tasks.c.id).where(
            _tasks.c.run_id == run_id, _tasks.c.status == PLANNED
        ).order_by(_tasks.c.id))).scalars().all()
    left = 0
    for task_id in planned:
        if not await _create(runtime, task_id):
            left += 1
    return left


async def _create(runtime: DeliveryRuntime, task_id: int) -> bool:
    """True when the task is settled (created or failed), False to try again later."""
    assert runtime.wecom_api is not None
    async with runtime.sessions.begin() as session:
        task = (await session.execute(
            update(_tasks).where(_tasks.c.id == task_id, _tasks.c.status == PLANNED)
            .values(status=CREATING, updated_at=utcnow(), attempts=_tasks.c.attempts + 1)
            .returning(_tasks)
        )).one_or_none()
    if task is None:
        return True  # another job has it
    recipients = await _recipients(runtime, task_id)
    if not recipients:
        await _set_task(runtime, task_id, DONE)
        return True
    await runtime.limiter.acquire(f"announce:wecom-attempted:{task.run_id}", task_id)
    try:
        if task.chat_type == "single":
            msgid, fails = await wecom_api.add_msg_template(
                runtime.wecom_api, chat_type="single", sender=task.sender, text=task.text,
                external_userids=list(recipients),
            )
        else:
            msgid, fails = await wecom_api.add_msg_template(
                runtime.wecom_api, chat_type="group", sender=task.sender, text=task.text, chat_ids=list(recipients),
            )
    except WeChatApiError as exc:
        if _retryable(exc) and task.attempts < runtime.max_attempts:
            await runtime.limiter.pause(runtime.backoff_seconds * 2 ** (task.attempts - 1))
            await _set_task(runtime, task_id, PLANNED, error=f"errcode {exc.errcode}: {exc.errmsg}")
            return False
        reason = f"WeCom add_msg_template failed: errcode {exc.errcode}: {exc.errmsg}"
        await _set_task(runtime, task_id, TASK_FAILED, error=reason)
        await _close(runtime, list(recipients.values()), FAILED, reason)
        return True
    await _created(runtime, task_id, msgid, fails, recipients)
    return True


async def _created(
    runtime: DeliveryRuntime, task_id: int, msgid: str, fails: list[str], recipients: dict[str, int]
) -> None:
    now = utcnow()
    failed = [recipients[key] for key in fails if key in recipients]
    async with runtime.sessions.begin() as session:
        await session.execute(update(_tasks).where(_tasks.c.id == task_id).values(
            status=CREATED, msgid=msgid, sent_at=now, updated_at=now, error=None))
        await session.execute(update(_deliveries).where(
            _deliveries.c.task_id == task_id, _deliveries.c.status == SENDING
        ).values(status=AWAITING, reason=f"waiting for the staff member to send WeCom task {msgid}", updated_at=now,
                 attempts=_deliveries.c.attempts + 1))
        if failed:
            await session.execute(update(_deliveries).where(_deliveries.c.id.in_(failed))
                                  .values(status=FAILED, reason=FAIL_LIST, updated_at=now))
    log.info("campaigns.wecom_task_created task=%s msgid=%s recipients=%d refused=%d", task_id, msgid,
             len(recipients), len(failed))


async def _recover(runtime: DeliveryRuntime, task: Any) -> None:
    """A task left `creating`: adopt WeCom's task if it exists (same text, same sender), else plan it again."""
    assert runtime.wecom_api is not None
    start = int((_aware(task.updated_at) - timedelta(minutes=5)).timestamp())
    end = int(utcnow().timestamp()) + 60
    async with runtime.sessions() as session:
        known = set((await session.execute(select(_tasks.c.msgid).where(_tasks.c.msgid.is_not(None)))).scalars())
    cursor = ""
    while True:
        found, cursor = await wecom_api.get_groupmsg_list_v2(runtime.wecom_api, chat_type=task.chat_type,
                                                            start_time=start, end_time=end, cursor=cursor)
        for row in found:
            msgid = str(row.get("msgid") or "")
            content = (row.get("text") or {}).get("content") if isinstance(row.get("text"), dict) else None
            if not msgid or msgid in known or content != task.text:
                continue
            holders, _ = await wecom_api.get_groupmsg_task(runtime.wecom_api, msgid)
            if any(holder.get("userid") == task.sender for holder in holders):
                log.warning("campaigns.wecom_task_adopted task=%s msgid=%s (created before the worker stopped)",
                            task.id, msgid)
                # fail_list is lost with the answer: send results say what became of each customer.
                await _created(runtime, task.id, msgid, [], await _recipients(runtime, task.id))
                return
        if not cursor:
            break
    await _set_task(runtime, task.id, PLANNED)


async def _recipients(runtime: DeliveryRuntime, task_id: int) -> dict[str, int]:
    """external_userid (single) or chat id (group) → delivery id, of the task's deliveries still being sent."""
    contacts = Contact.__table__
    async with runtime.sessions() as session:
        rows = (await session.execute(
            select(_deliveries.c.id, _deliveries.c.chat_id, contacts.c.external_id)
            .outerjoin(contacts, contacts.c.id == _deliveries.c.contact_id)
            .where(_deliveries.c.task_id == task_id, _deliveries.c.status.in_((SENDING, AWAITING)))
            .order_by(_deliveries.c.id)
        )).all()
    return {(row.chat_id or row.external_id): row.id for row in rows}


async def _set_task(runtime: DeliveryRuntime, task_id: int, status: str, *, error: str | None = None) -> None:
    async with runtime.sessions.begin() as session:
        await session.execute(update(_tasks).where(_tasks.c.id == task_id)
                              .values(status=status, error=error, updated_at=utcnow()))


async def _close(runtime: DeliveryRuntime, ids: list[int], status: str, reason: str | None) -> None:
    if not ids:
        return
    async with runtime.sessions.begin() as session:
        await session.execute(update(_deliveries).where(_deliveries.c.id.in_(ids))
                              .values(status=status, reason=reason, updated_at=utcnow()))


async def track(runtime: DeliveryRuntime, run_id: int, timing: WeComTiming) -> int:
    """Read the send results of the run's created tasks into delivery states; remind, expire.
    Returns how many of the run's tasks are still open (created, not done)."""
    assert runtime.wecom_api is not None
    async with runtime.sessions() as session:
        tasks = (await session.execute(select(_tasks).where(
            _tasks.c.run_id == run_id, _tasks.c.status == CREATED
        ).order_by(_tasks.c.id))).all()
    still_open = 0
    for task in tasks:
        try:
            awaiting = await _read_results(runtime, task)
        except WeChatApiError as exc:
            log.warning("campaigns.wecom_result_unread task=%s msgid=%s errcode=%s", task.id, task.msgid, exc.errcode)
            still_open += 1
            continue
        now = utcnow()
        age = now - _aware(task.sent_at or task.created_at)
        if not awaiting:
            await _set_task(runtime, task.id, DONE)
            continue
        if age >= timing.expire_after:
            hours = timing.expire_after.total_seconds() / 3600
            await _close(runtime, awaiting, FAILED,
                         f"staff member {task.sender} did not send WeCom task {task.msgid} within {hours:g} h")
            await _set_task(runtime, task.id, DONE)
            continue
        still_open += 1
        if age >= timing.remind_after:
            await _remind(runtime, task)
    return still_open


async def _read_results(runtime: DeliveryRuntime, task: Any) -> list[int]:
    """Apply the task's send results; returns the deliveries still awaiting the staff member."""
    assert runtime.wecom_api is not None
    recipients = await _recipients(runtime, task.id)
    changes: list[dict[str, Any]] = []
    cursor = ""
    while True:
        rows, cursor = await wecom_api.get_groupmsg_send_result(runtime.wecom_api, task.msgid, task.sender,
                                                                cursor=cursor)
        for row in rows:
            key = str(row.get("chat_id") or row.get("external_userid") or "")
            state = SEND_RESULT.get(int(row.get("status") or 0))
            if state is None:
                continue  # 0: not sent yet
            delivery = recipients.pop(key, None)
            if delivery is not None:
                changes.append({"b_id": delivery, "b_status": state[0], "b_reason": state[1]})
        if not cursor:
            break
    if changes:
        async with runtime.sessions.begin() as session:
            await session.connection()
            await session.execute(
                update(_deliveries).where(_deliveries.c.id == bindparam("b_id"), _deliveries.c.status == AWAITING)
                .values(status=bindparam("b_status"), reason=bindparam("b_reason"), updated_at=utcnow()),
                changes,
            )
    return list(recipients.values())


async def _remind(runtime: DeliveryRuntime, task: Any) -> None:
    """Once per task: claimed in the database first, so a retried job or a second worker never reminds twice."""
    assert runtime.wecom_api is not None
    async with runtime.sessions.begin() as session:
        claimed = (await session.execute(
            update(_tasks).where(_tasks.c.id == task.id, _tasks.c.reminded_at.is_(None))
            .values(reminded_at=utcnow()).returning(_tasks.c.id)
        )).scalar_one_or_none()
    if claimed is None:
        return
    try:
        await wecom_api.remind_groupmsg_send(runtime.wecom_api, task.msgid)
        log.info("campaigns.wecom_reminded task=%s msgid=%s sender=%s", task.id, task.msgid, task.sender)
        return
    except WeChatApiError as exc:
        log.warning("campaigns.wecom_remind_failed task=%s errcode=%s; trying an app message", task.id, exc.errcode)
    if runtime.wecom_api.client.agentid is None:
        return
    try:
        await runtime.wecom_api.send_app_text(
            task.sender, f"【群发提醒】你有一条活动群发任务还没有发送，请在企业微信「客户联系 → 群发助手」中确认发送：\n{task.text[:200]}"
        )
    except WeChatApiError as exc:
        log.warning("campaigns.wecom_app_reminder_failed task=%s errcode=%s", task.id, exc.errcode)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def creating(runtime: DeliveryRuntime, run_id: int) -> int:
    """Tasks of the run caught mid-create (a stopped worker's), not yet looked up."""
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).where(
            _tasks.c.run_id == run_id, _tasks.c.status.in_((CREATING, PLANNED))
        ))).scalar_one())


async def fail_unconfigured(runtime: DeliveryRuntime, run_id: int) -> None:
    reason = "WECOM_CORP_ID/WECOM_SECRET are not configured"
    async with runtime.sessions.begin() as session:
        await session.execute(update(_tasks).where(_tasks.c.run_id == run_id, _tasks.c.status == PLANNED)
                              .values(status=TASK_FAILED, error=reason, updated_at=utcnow()))
        await session.execute(update(_deliveries).where(
            _deliveries.c.run_id == run_id, _deliveries.c.status.in_((PENDING, SENDING))
        ).values(status=FAILED, reason=reason, updated_at=utcnow()))
