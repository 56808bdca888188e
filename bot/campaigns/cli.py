"""`python -m bot announce check | preview CAMPAIGN | run CAMPAIGN [--dry-run] | report RUN`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    announce = commands.add_parser("announce", help="flash-sale announcements: check, preview, run, report")
    actions = announce.add_subparsers(metavar="ACTION")

    check = actions.add_parser("check", help="validate scripts, sale files and campaigns (file:line errors)")
    check.add_argument("path", nargs="?", type=Path, help="scripts folder (default SCRIPTS_DIR)")
    check.set_defaults(run=_check)

    preview = actions.add_parser("preview", help="render what each segment receives and count the audience")
    preview.add_argument("campaign")
    preview.add_argument("--slot", default=None, help="slot to preview (default: every slot)")
    preview.set_defaults(run=_preview)

    run = actions.add_parser("run", help="start a run of CAMPAIGN now")
    run.add_argument("campaign")
    run.add_argument("--slot", default=None, help="which slot's script (default: the first)")
    run.add_argument("--dry-run", action="store_true", help="plan and render, send nothing")
    run.add_argument("--no-wait", action="store_true", help="enqueue and return instead of showing progress")
    run.set_defaults(run=_run)

    report = actions.add_parser("report", help="what happened to each delivery of RUN")
    report.add_argument("run_id", metavar="RUN", type=int)
    report.set_defaults(run=_report)


def _check(args: argparse.Namespace) -> int:
    from bot.campaigns.library import load_library
    from bot.campaigns.settings import CampaignSettings

    root = args.path or CampaignSettings().scripts_dir
    if not root.is_dir():
        print(f"{root}:0: not a folder", file=sys.stdout)
        return 1
    library, issues = load_library(root)
    for issue in issues:
        print(issue)
    if library is None:
        print(f"{len(issues)} problem(s) in {root}")
        return 1
    print(f"ok: {len(library.scripts)} script(s), {len(library.sales)} sale(s), {len(library.campaigns)} campaign(s) in {root}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from bot.campaigns.commands import preview_command

    return preview_command(args.campaign, args.slot)


def _run(args: argparse.Namespace) -> int:
    from bot.campaigns.commands import run_command

    return run_command(args.campaign, slot=args.slot, dry_run=args.dry_run, wait=not args.no_wait)


def _report(args: argparse.Namespace) -> int:
    from bot.campaigns.commands import report_command

    return report_command(args.run_id)
