"""Checks on a persona's `offers` that need no database: the lines offers speak must be there.

Whether the named batches and pools exist is checked by `persona check` against the
database (bot.offers.persona_check), when one is reachable.
"""

from __future__ import annotations

from bot.persona.issues import PersonaIssue
from bot.persona.schema import OFFER_LINES, PersonaDefinition
from bot.persona.yaml_source import YamlDocument


def check_offer_lines(doc: YamlDocument, definition: PersonaDefinition) -> list[PersonaIssue]:
    if not definition.offers and not definition.my_coupons_words:
        return []
    issues = []
    lines = definition.lines.model_dump()
    for key in OFFER_LINES:
        if lines.get(key) is None:
            issues.append(PersonaIssue(
                doc.file, doc.line_of(("lines",)),
                f"lines.{key} is missing: a persona with offers needs it (see persona/demo/persona.yaml)",
            ))
    for name, offer in definition.offers.items():
        if offer.coupon is None and offer.group_pool is None:
            issues.append(PersonaIssue(
                doc.file, doc.line_of(("offers", name)), f"offer {name!r} gives nothing: name a coupon and/or a group_pool"
            ))
    return issues
