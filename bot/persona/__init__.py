"""Personas: who the bot is for a brand — voice, greetings, FAQ, synonyms, tag rules — as editable files.

A persona is a folder (persona.yaml, faq.yaml, synonyms.yaml, tags.yaml).
`load_persona` builds one, `check_persona` explains what's wrong with one, and
`PersonaRegistry` serves several side by side, hot-reloads them on edit and
keeps every good version for rollback.
"""

from bot.persona.issues import PersonaError, PersonaIssue
from bot.persona.loaded import LoadedPersona
from bot.persona.loader import check_persona, load_persona
from bot.persona.schema import PersonaDefinition

__all__ = [
    "LoadedPersona",
    "PersonaDefinition",
    "PersonaError",
    "PersonaIssue",
    "check_persona",
    "load_persona",
]
