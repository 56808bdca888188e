"""The commands: who may run each (default deny), where, and what arguments they take.

Access control is code, not content: a command with no roles listed is refused to everyone,
and admin-only commands are refused in group chats (where others read along). Arguments are
validated with pydantic before anything runs; a bad one gets the usage line and nothing happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints, TypeAdapter, ValidationError

from bot.chatops.roles import Role

#: Longest argument text looked at: a command line is short; 10 KB of arguments is an attack or a paste.
MAX_ARGUMENT_CHARS = 600


class ArgKind(StrEnum):
    #: A contact's id on its channel (OA openid, WeCom external userid, console name).
    CUSTOMER = "customer"
    TAG = "tag"
    #: A coupon batch or group-pool name.
    KEY = "key"
    #: Free text to the end of the line (a broadcast message).
    TEXT = "text"


_VALIDATORS: dict[ArgKind, TypeAdapter[str]] = {
    ArgKind.CUSTOMER: TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-@.:]{1,128}$")]),
    # Letters (CJK included) and digits, with _ - · inside: no quotes, semicolons, markup or emoji.
    ArgKind.TAG: TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[^\W_][\w\-·]{0,31}$")]),
    ArgKind.KEY: TypeAdapter(Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")]),
    # Any text up to 500 characters, but it must say something in letters or digits (not emoji only).
    ArgKind.TEXT: TypeAdapter(Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"(?s)^.*[^\W_].*$")]),
}


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str
    kind: ArgKind
    optional: bool = False


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    roles: frozenset[Role]
    args: tuple[ArgSpec, ...] = ()
    #: Refused in group chats.
    private_only: bool = False
    #: Touches many contacts: proposed first, run after 确认.
    bulk: bool = False

    def allows(self, role: Role | None) -> bool:
        return role is not None and role in self.roles


class BadArguments(ValueError):
    pass


def parse_arguments(spec: CommandSpec, text: str) -> dict[str, str]:
    """The arguments by name, validated; BadArguments when anything is off."""
    if len(text) > MAX_ARGUMENT_CHARS:
        raise BadArguments("arguments too long")
    if any(ord(char) < 32 and char not in "\t\n" for char in text):
        raise BadArguments("control characters")
    values: dict[str, str] = {}
    remaining = text.strip()
    for position, arg in enumerate(spec.args):
        if arg.kind is ArgKind.TEXT:
            piece, remaining = remaining, ""
        else:
            piece, _, remaining = remaining.partition(" ")
            remaining = remaining.strip()
        if not piece:
            if arg.optional:
                continue
            raise BadArguments(f"missing {arg.name}")
        try:
            values[arg.name] = _VALIDATORS[arg.kind].validate_python(piece)
        except ValidationError:
            raise BadArguments(f"bad {arg.name} (argument {position + 1})") from None
    if remaining:
        raise BadArguments("too many arguments")
    return values


_EVERYONE = frozenset(Role)
_OPERATORS = frozenset({Role.ADMIN, Role.OPERATOR})
_ADMINS = frozenset({Role.ADMIN})

COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("help", _EVERYONE),
        CommandSpec("lookup", _EVERYONE, (ArgSpec("customer", ArgKind.CUSTOMER),)),
        CommandSpec("tag", _EVERYONE, (ArgSpec("customer", ArgKind.CUSTOMER), ArgSpec("tag", ArgKind.TAG))),
        CommandSpec("untag", _EVERYONE, (ArgSpec("customer", ArgKind.CUSTOMER), ArgSpec("tag", ArgKind.TAG))),
        CommandSpec(
            "bulk_tag", _OPERATORS, (ArgSpec("tag", ArgKind.TAG), ArgSpec("new_tag", ArgKind.TAG)), bulk=True
        ),
        CommandSpec("coupon", _OPERATORS, (ArgSpec("customer", ArgKind.CUSTOMER), ArgSpec("batch", ArgKind.KEY))),
        CommandSpec(
            "bulk_coupon", _ADMINS, (ArgSpec("tag", ArgKind.TAG), ArgSpec("batch", ArgKind.KEY)),
            private_only=True, bulk=True,
        ),
        CommandSpec(
            "broadcast", _ADMINS, (ArgSpec("tag", ArgKind.TAG), ArgSpec("text", ArgKind.TEXT)),
            private_only=True, bulk=True,
        ),
        CommandSpec("pool", _EVERYONE, (ArgSpec("pool", ArgKind.KEY, optional=True),)),
        CommandSpec("stats", _OPERATORS),
        CommandSpec("reload", _ADMINS, private_only=True),
        CommandSpec("takeover", _EVERYONE, (ArgSpec("customer", ArgKind.CUSTOMER),)),
        CommandSpec("release", _EVERYONE, (ArgSpec("customer", ArgKind.CUSTOMER),)),
        CommandSpec("preview", _OPERATORS, (ArgSpec("announcement", ArgKind.KEY, optional=True),)),
        CommandSpec(
            "announce", _ADMINS, (ArgSpec("announcement", ArgKind.KEY), ArgSpec("slot", ArgKind.KEY, optional=True)),
            private_only=True, bulk=True,
        ),
    )
}
