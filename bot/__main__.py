"""Command line: `python -m bot <command>`.

serve                        run the webhook server (what `make run` does)
db upgrade                   apply database migrations (Alembic) to DATABASE_URL
chat [--as customer|staff:ID] talk to the bot in the terminal
persona check [PATH]         validate a persona folder (exit 0 clean, 1 with mistakes)
persona versions [PATH]      list kept versions of a persona
persona rollback [PATH] [--to VERSION]   restore a kept version (default: the previous one)
faq eval --kb FILE --questions FILE      measure FAQ matching on a labelled TSV
worker                       run the arq worker (background jobs; needs REDIS_URL)
audit [--since WHEN] [--who ID]          list chat-ops command attempts
announce check|preview|run|report        flash-sale announcements (bot/campaigns/cli.py)
"""

from __future__ import annotations

import gc

# Start-up allocates millions of objects (imports, jieba's dictionary, the FAQ index) and
# leaves almost no garbage cycles, so collections during it are wasted work (~15% of the
# start). `serve` turns the collector back on once it listens; other commands right away.
gc.disable()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402
from sqlalchemy.exc import ArgumentError  # noqa: E402

from bot.chatops import cli as chatops_cli  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.faq import cli as faq_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is not _serve:
        gc.enable()
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ValidationError as error:
        # Settings come from the environment: name the variable, not a traceback.
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            print(f"configuration error: {name}={problem.get('input')!r}: {problem['msg']}", file=sys.stderr)
        return 2
    except ArgumentError as error:
        print(f"configuration error: DATABASE_URL: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Siyu: WeChat private-domain community bot")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the webhook server")
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database migrations").add_subparsers(metavar="ACTION")
    upgrade = db.add_parser("upgrade", help="apply migrations up to REVISION (default head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(run=_db_upgrade)

    chat = commands.add_parser("chat", help="talk to the bot in the terminal")
    chat.add_argument("--as", dest="as_", default="customer", help="customer[:ID] (default) or staff:ID")
    chat.set_defaults(run=_chat)

    persona = commands.add_parser("persona", help="check, list or roll back personas").add_subparsers(metavar="ACTION")
    check = persona.add_parser("check", help="validate a persona folder")
    check.add_argument("path", nargs="?", type=Path)
    check.set_defaults(run=_persona_check)
    versions = persona.add_parser("versions", help="list kept versions")
    versions.add_argument("path", nargs="?", type=Path)
    versions.set_defaults(run=_persona_versions)
    rollback = persona.add_parser("rollback", help="restore a kept version into the persona folder")
    rollback.add_argument("path", nargs="?", type=Path)
    rollback.add_argument("--to", dest="to", default=None, help="version to restore (default: the previous one)")
    rollback.set_defaults(run=_persona_rollback)

    faq = commands.add_parser("faq", help="FAQ tools").add_subparsers(metavar="ACTION")
    evaluate = faq.add_parser("eval", help="measure matching on labelled questions")
    evaluate.add_argument("--kb", required=True, type=Path, help="FAQ YAML (id, question, answer, examples)")
    evaluate.add_argument("--questions", required=True, type=Path, help="TSV: question<TAB>faq_id (none = out of scope)")
    evaluate.add_argument("--rows", choices=("even", "odd", "all"), default="all",
                          help="questions at even/odd 0-based positions after the header (tune/held-back split)")
    evaluate.add_argument("--rerank", action="store_true", help="with the semantic re-ranker ('rerank' extra)")
    evaluate.set_defaults(run=_faq_eval)

    from bot.jobs import cli as jobs_cli  # noqa: E402 - `python -m bot worker`

    jobs_cli.register(commands)
    from bot.offers.cli import register as register_offers  # coupon, group pool, demo seed

    register_offers(commands)
    from bot.funnel.cli import register as register_funnel  # stats funnel

    register_funnel(commands)
    chatops_cli.register(commands)
    from bot.wecom.cli import register as register_wecom  # channel ..., stats channels (keep last: joins `stats`)

    register_wecom(commands)

    from bot.campaigns.cli import register as register_announce  # announce check|preview|run|report

    register_announce(commands)
    faq_cli.register(faq)  # misses, learn (bot/faq/cli.py)
    return parser


def _settings() -> Settings:
    return Settings()


def _serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    return serve(_settings())


def _db_upgrade(args: argparse.Namespace) -> int:
    from bot.storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}: {_redacted(settings.database_url)}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from bot.console import console_main
    from bot.storage.migrate import upgrade

    logging.basicConfig(level=logging.ERROR)
    settings = _settings()
    upgrade(settings.database_url)  # the console is for trying things: bring the database along
    return console_main(settings, args.as_)


def _persona_check(args: argparse.Namespace) -> int:
    from bot.offers.persona_check import check_offers_exist
    from bot.persona import check_command

    settings = _settings()
    path = args.path or settings.persona
    status = check_command(path, sys.stdout)
    return max(status, check_offers_exist(path, settings.database_url, sys.stdout))


def _persona_versions(args: argparse.Namespace) -> int:
    from bot.persona import versions_command

    settings = _settings()
    return versions_command(args.path or settings.persona, settings.persona_history_dir, sys.stdout)


def _persona_rollback(args: argparse.Namespace) -> int:
    from bot.persona import rollback_command

    settings = _settings()
    return rollback_command(args.path or settings.persona, args.to, settings.persona_history_dir, sys.stdout)


def _faq_eval(args: argparse.Namespace) -> int:
    from bot.faq.evaluate import run_eval

    return run_eval(args.kb, args.questions, sys.stdout, rows_selected=args.rows, rerank=args.rerank)


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url


if __name__ == "__main__":
    sys.exit(main())
