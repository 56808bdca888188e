"""What `announce preview|run|report` and the chat-ops `/预告` do."""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

from bot.campaigns import runs
from bot.campaigns.campaign import GROUP_SEGMENT, next_time
from bot.campaigns.library import ScriptLibrary, load_library
from bot.campaigns.models import AWAITING, PENDING, SENDING
from bot.campaigns.runs import Sessions
from bot.campaigns.settings import CampaignSettings


async def preview(
    campaign: str, *, sessions: Sessions, scripts_dir: Path | None = None, slot: str | None = None,
    now: datetime | None = None, library: ScriptLibrary | None = None,
) -> str:
    """What each segment of `campaign` receives (per slot) and how many each segment counts now.

    For the CLI and for staff in chat (`/预告`); raises KeyError for an unknown campaign and
    ValueError when the scripts don't check (with the file:line issues).
    """
    now = now or datetime.now(UTC)
    if library is None:
        library, issues = load_library(scripts_dir or CampaignSettings().scripts_dir, now, refuse_past_start=False)
        if library is None:
            raise ValueError("scripts have problems:\n" + "\n".join(map(str, issues)))
    chosen = library.campaign(campaign)
    sale = library.sale_of(chosen)
    counts = await runs.audience_counts(sessions, chosen, now)
    lines = [f"【{chosen.title or chosen.name}】{chosen.name} · {chosen.channel}"]
    groups, groups_unreachable = counts.pop(GROUP_SEGMENT, (0, 0))
    segments = [segment.name for segment in chosen.audience.segments] if runs.reaches_customers(chosen) else []
    total = sum(total for total, _ in counts.values())
    if chosen.channel == "wechat_oa":
        reachable = sum(total - outside for total, outside in counts.values())
        lines.append(f"audience now: {total} (reachable within 48 h window: {reachable})")
        for name in segments:
            count, outside = counts.get(name, (0, 0))
            lines.append(f"  {name}: {count} ({outside} outside the 48 h window)")
    else:
        if segments:
            lines.append(f"customers now: {total}")
            lines.extend(f"  {name}: {counts.get(name, (0, 0))[0]}" for name in segments)
        if runs.reaches_wecom_groups(chosen) or chosen.channel == "wecom_aibot":
            unknown = f" ({groups_unreachable} whose owner is not known yet)" if groups_unreachable else ""
            lines.append(f"group chats now: {groups}{unknown}")
    if runs.reaches_wecom_groups(chosen) or chosen.channel == "wecom_aibot":
        segments.append(GROUP_SEGMENT)  # what each group chat would read
    slots = [chosen.slot(slot)] if slot else chosen.slots
    for each in slots:
        script = library.scripts[each.script]
        when = next_time(each, sale, now)
        lines.append("")
        lines.append(f"== {each.name} · next {when:%Y-%m-%d %H:%M} (Asia/Shanghai) · script {script.name}")
        variables = {"sale": sale.variables(now), "campaign": {"name": chosen.name, "title": chosen.title}, "slot": each.name}
        for name in segments:
            recipient = {"name": "", "tags": [], "source_channel": "", "segment": name, "coupons": []}
            text = script.render(name, chosen.channel, {**variables, "recipient": recipient})
            lines.append(f"-- {name} --")
            lines.append(text)
    return "\n".join(lines)


def preview_command(campaign: str, slot: str | None) -> int:
    settings = CampaignSettings()

    async def go() -> str:
        from bot.storage.db import create_engine, session_factory

        engine = create_engine(settings.database_url)
        try:
            return await preview(campaign, sessions=session_factory(engine), scripts_dir=settings.scripts_dir, slot=slot)
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(go()))
    except (KeyError, ValueError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 1
    return 0


def run_command(campaign: str, *, slot: str | None, dry_run: bool, wait: bool) -> int:
    settings = CampaignSettings()
    try:
        return asyncio.run(_run(settings, campaign, slot, dry_run, wait))
    except (KeyError, ValueError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 1


async def _run(settings: CampaignSettings, campaign_name: str, slot_name: str | None, dry_run: bool, wait: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bot.campaigns.jobs import plan_job_id
    from bot.campaigns.runtime import CampaignRuntime

    library, issues = load_library(settings.scripts_dir, refuse_past_start=False)
    if library is None:
        raise ValueError("scripts have problems:\n" + "\n".join(map(str, issues)))
    campaign = library.campaign(campaign_name)
    slot = campaign.slot(slot_name) if slot_name else campaign.slots[0]
    redis = None
    if settings.redis_url:
        from arq import create_pool

        from bot.campaigns.runtime import redis_settings

        redis = await create_pool(redis_settings(settings.redis_url))
    runtime = await CampaignRuntime.open(settings, redis)
    try:
        run_id = await runs.create_run(
            runtime.sessions, campaign=campaign.name, slot=slot.name, scheduled_for=datetime.now(UTC),
            dry_run=dry_run, started_by=f"cli:{getpass.getuser()}",
        )
        assert run_id is not None
        print(f"run {run_id}: {campaign.name}/{slot.name}{' (dry run)' if dry_run else ''}")
        if redis is None:
            # Embedded default: no queue, so the jobs run here, in this process.
            task = asyncio.ensure_future(runtime.enqueue("announce_plan", run_id))
        else:
            await runtime.enqueue("announce_plan", run_id, job_id=plan_job_id(run_id))
            task = None
            if not wait:
                print(f"enqueued; workers deliver it. Follow with: python -m bot announce report {run_id}")
                return 0
        with Progress(TextColumn("[bold]run {task.fields[run]}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[detail]}"), TimeRemainingColumn(), transient=False) as progress:
            bar = progress.add_task("deliver", total=None, run=run_id, detail="planning")
            while True:
                report = await runs.report(runtime.sessions, run_id)
                if report is not None and report.run.status != "planning":
                    detail = ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items()))
                    progress.update(bar, total=report.run.total, completed=report.done, detail=detail)
                    if report.run.status == "done":
                        break
                    if report.by_status.get(AWAITING) and not any(report.by_status.get(s) for s in (PENDING, SENDING)):
                        # WeCom: the rest is up to staff members in the WeCom app (tracked by the workers).
                        progress.update(bar, detail=detail + f" — {report.by_status[AWAITING]} await their staff "
                                        "member's confirmation in WeCom")
                        break
                if task is not None and task.done():
                    task.result()  # raise what went wrong in-process
                    if report is not None and report.run.status == "done":
                        break
                await asyncio.sleep(0.25)
        final = await runs.report(runtime.sessions, run_id)
        print(final.text() if final else f"run {run_id} vanished")
        return 0
    finally:
        await runtime.close()
        if redis is not None:
            await redis.aclose()


def report_command(run_id: int) -> int:
    settings = CampaignSettings()

    async def go() -> str | None:
        from bot.storage.db import create_engine, session_factory

        engine = create_engine(settings.database_url)
        try:
            found = await runs.report(session_factory(engine), run_id)
            return found.text() if found else None
        finally:
            await engine.dispose()

    text = asyncio.run(go())
    if text is None:
        print(f"no run {run_id}", file=sys.stderr)
        return 1
    print(text)
    return 0
