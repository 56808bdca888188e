"""Personas: who the bot is for a brand — voice, greetings, FAQ, synonyms, tag rules — as editable files.

A persona is a folder (persona.yaml, faq.yaml, synonyms.yaml, tags.yaml).
`load_persona` builds one, `check_persona` explains what's wrong with one, and
`PersonaRegistry` serves several side by side, hot-reloads them on edit and
keeps every good version for rollback.
"""

from bot.persona.cli import check_command, rollback_command, versions_command
from bot.persona.history import HistoryError, PersonaHistory, PersonaVersion
from bot.persona.issues import PersonaError, PersonaIssue
from bot.persona.loaded import LoadedPersona
from bot.persona.loader import check_persona, load_persona
from bot.persona.registry import PersonaRegistry
from bot.persona.schema import PersonaDefinition

__all__ = [
    "HistoryError",
    "PersonaHistory",
    "PersonaRegistry",
    "PersonaVersion",
    "check_command",
    "rollback_command",
    "versions_command",
    "LoadedPersona",
    "PersonaDefinition",
    "PersonaError",
    "PersonaIssue",
    "check_persona",
    "load_persona",
]
