"""`persona check`, second half: do the batches and pools a persona's `offers` name exist?

Needs the database. When it is not reachable (or not migrated) the check says so and is
skipped rather than guessed: the persona is not wrong because the database is down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TextIO

from bot.persona.files import PERSONA_FILE
from bot.persona.issues import PersonaIssue
from bot.persona.yaml_source import parse_yaml


def check_offers_exist(persona_path: Path, database_url: str, out: TextIO) -> int:
    """Print `file:line: …` for each offer naming a batch or pool that does not exist; 1 when any."""
    file = persona_path / PERSONA_FILE
    try:
        doc, problems = parse_yaml(file, file.read_bytes())
    except OSError:
        return 0  # the persona check proper reports a missing file
    if doc is None or problems or not isinstance(doc.data, dict):
        return 0
    offers = doc.data.get("offers")
    if not isinstance(offers, dict) or not offers:
        return 0
    wanted: list[tuple[str, str, str]] = []  # (offer, "coupon" | "group_pool", name)
    for offer, spec in offers.items():
        if isinstance(spec, dict):
            for field in ("coupon", "group_pool"):
                if isinstance(spec.get(field), str):
                    wanted.append((str(offer), field, spec[field]))
    if not wanted:
        return 0
    reachable, missing = asyncio.run(_missing(database_url, wanted))
    if reachable is not None:
        print(f"{file}: offers not checked against the database: {reachable}", file=out)
        return 0
    issues = []
    for offer, field, name in missing:
        line = doc.line_of(("offers", offer, field))
        if field == "coupon":
            fix = f"create it: python -m bot coupon batch create {name} --title TEXT --stock N"
            what = "coupon batch"
        else:
            fix = f"create it: python -m bot group pool create {name}, then group pool add {name} GROUP --qr FILE"
            what = "group pool"
        issues.append(PersonaIssue(file, line, f"offers.{offer}.{field}: no {what} named {name!r}; {fix}"))
    for issue in issues:
        print(issue, file=out)
    if issues:
        print(f"{len(issues)} offer(s) name what does not exist", file=out)
        return 1
    print(f"{file}: offers OK — {len(wanted)} batch/pool name(s) exist", file=out)
    return 0


async def _missing(database_url: str, wanted: list[tuple[str, str, str]]) -> tuple[str | None, list[Any]]:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.offers import repository
    from bot.storage.db import create_engine, session_factory
    from bot.storage.migrate import DatabaseNotMigrated, ensure_migrated

    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix) and not Path(database_url[len(prefix):]).exists():
        return "the SQLite file does not exist yet (run python -m bot db upgrade)", []
    engine = create_engine(database_url)
    try:
        async with asyncio.timeout(5):
            await ensure_migrated(engine)
            async with session_factory(engine)() as session:
                missing = []
                for offer, field, name in wanted:
                    found = (
                        await repository.batch_named(session, name)
                        if field == "coupon"
                        else await repository.pool_named(session, name)
                    )
                    if found is None:
                        missing.append((offer, field, name))
                return None, missing
    except DatabaseNotMigrated:
        return "the database is not migrated (run python -m bot db upgrade)", []
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        return f"the database is not reachable ({type(error).__name__})", []
    finally:
        await engine.dispose()
