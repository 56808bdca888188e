"""App-scoped personas: several side by side (chosen by channel), hot-reloaded, versioned.

A broken edit never takes the bot down: reload keeps serving the previous
version and logs each issue as `file:line: message` on the "siyu.persona"
logger, so the admin sees exactly what to fix.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bot.file_watch import reload_on_edit
from bot.persona.files import PERSONA_FILES, read_snapshot, version_of
from bot.persona.history import PersonaHistory, PersonaVersion
from bot.persona.issues import PersonaError, PersonaIssue
from bot.persona.loaded import LoadedPersona
from bot.persona.loader import build_persona
from bot.persona.sandbox import check_in_sandbox

if TYPE_CHECKING:
    from bot.faq.analyzer import TextAnalyzer

logger = logging.getLogger("siyu.persona")



class PersonaRegistry:
    def __init__(
        self,
        default: Path,
        by_channel: Mapping[str, Path] = {},  # noqa: B006 - read only
        *,
        history_dir: Path,
        analyzer: TextAnalyzer | None = None,
    ) -> None:
        """Loads every persona now (CPU and file work: call at start-up or via asyncio.to_thread).

        Raises PersonaError when a persona cannot be loaded: there is nothing older to serve.
        """
        if analyzer is None:
            from bot.faq.analyzer import TextAnalyzer  # noqa: PLC0415 - jieba is slow to import

            analyzer = TextAnalyzer()
        self._analyzer = analyzer
        self._default = default.resolve()
        self._by_channel = {channel: path.resolve() for channel, path in by_channel.items()}
        self._history = PersonaHistory(history_dir)
        self._loaded: dict[Path, LoadedPersona] = {}
        # reload() runs from the watcher's thread and from admin commands; one at a time.
        self._reload_lock = threading.Lock()
        issues = self.reload()
        if missing := [path for path in self.paths if path not in self._loaded]:
            raise PersonaError(issues or [PersonaIssue(path, 0, "persona could not be loaded") for path in missing])

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys([self._default, *self._by_channel.values()]))

    @property
    def history(self) -> PersonaHistory:
        return self._history

    def for_channel(self, channel: str) -> LoadedPersona:
        return self._loaded[self._by_channel.get(channel, self._default)]

    def settle(self) -> None:
        """Finish what loading put off: the FAQ's homophone corrections, which import pypinyin
        (~0.3 s), so no customer's message waits for it (bot.app calls it before serving)."""
        for persona in list(self._loaded.values()):
            persona.faq.settle()

    def reload(self) -> list[PersonaIssue]:
        """Re-load personas whose files changed; a broken one keeps serving its previous version."""
        issues: list[PersonaIssue] = []
        with self._reload_lock:
            for path in self.paths:
                issues += self._reload_one(path)
        return issues

    def _reload_one(self, path: Path) -> list[PersonaIssue]:
        snapshot, read_issues = read_snapshot(path)
        version = version_of(snapshot)
        current = self._loaded.get(path)
        if current is not None and current.version == version and not read_issues:
            return []
        # Content nobody has run yet runs first in a limited child (bot/persona/sandbox.py): a
        # template or regex bomb is refused there and never reaches this process.
        refused = check_in_sandbox(path, snapshot, read_issues)
        if refused:
            for issue in refused:
                logger.error("%s", issue)
            if current is not None:
                logger.warning("persona %s: edit rejected, still serving version %s", path, current.version)
            return refused
        try:
            persona = build_persona(path, snapshot, read_issues=read_issues, analyzer=self._analyzer)
        except PersonaError as exc:
            for issue in exc.issues:
                logger.error("%s", issue)
            if current is not None:
                logger.warning("persona %s: edit rejected, still serving version %s", path, current.version)
            return exc.issues
        except Exception as exc:  # a bug must not stop the watcher or the bot
            logger.exception("persona %s: unexpected error while loading", path)
            return [PersonaIssue(path, 0, f"unexpected error while loading: {exc!r}")]
        # One dict assignment: handlers see the old persona or the new one, never a mix.
        self._loaded[path] = persona
        if current is not None:
            # The server froze what start-up built out of the cycle collector (bot/server.py);
            # the persona just replaced may be part of that: let its cycles be collected.
            gc.unfreeze()
            persona.analyzer.prepare_fast_cut()  # (at start-up the app does this once it serves)
        logger.info("persona %s (%s): now serving version %s", persona.name, path, persona.version)
        try:
            self._history.keep(path, persona.version, snapshot)
        except OSError:
            logger.exception("persona %s: could not keep version %s for rollback", path, persona.version)
        return []

    def prepare_fast_cuts(self) -> None:
        """Start loading jieba-rs for every persona served (in threads; see TextAnalyzer.prepare_fast_cut)."""
        for persona in list(self._loaded.values()):
            persona.analyzer.prepare_fast_cut()

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload within seconds of any edit to a persona file, until `stop` is set."""
        await reload_on_edit("persona", self.paths, _is_persona_file, self.reload, stop, reload_first=True)

    def versions(self, path: Path | None = None) -> list[PersonaVersion]:
        """Kept versions of a persona (default: the default persona), oldest first."""
        return self._history.versions(path or self._default)

    def rollback(self, path: Path | None = None, version: str | None = None) -> str:
        """Write a kept version (default: the previous one) back into the folder; the watcher reloads it."""
        return self._history.rollback(path or self._default, version)


def _is_persona_file(path: str) -> bool:
    return Path(path).name in PERSONA_FILES
