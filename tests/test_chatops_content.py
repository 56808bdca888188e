"""The command table and its wording stay in step: every command worded, admin commands 1:1 only."""

from __future__ import annotations

from bot.chatops.parsing import CommandNames, split_command
from bot.chatops.roles import Role
from bot.chatops.specs import COMMANDS
from bot.chatops.texts import ChatopsTexts


def test_every_command_has_wording_and_a_chinese_alias() -> None:
    texts = ChatopsTexts.load()
    assert set(texts.data.commands) == set(COMMANDS)
    for name in COMMANDS:
        assert any("\u4e00" <= char <= "\u9fff" for alias in texts.command(name).aliases for char in alias), name


def test_admin_only_commands_are_refused_in_groups() -> None:
    for spec in COMMANDS.values():
        if spec.roles == frozenset({Role.ADMIN}):
            assert spec.private_only, spec.name


def test_aliases_do_not_collide_and_full_width_prefixes_parse() -> None:
    texts = ChatopsTexts.load()
    seen: dict[str, str] = {}
    for name in COMMANDS:
        for word in (name, *texts.command(name).aliases):
            assert seen.setdefault(word, name) == name, f"{word} names both {seen[word]} and {name}"
    names = CommandNames(texts, COMMANDS)
    for typed in ("／查 abc", "＃查 abc", "#查　abc", "/ＬＯＯＫＵＰ abc"):
        line = split_command(typed)
        assert line is not None and names.resolve(line.word) == "lookup" and line.arguments == "abc", typed
    assert split_command("查 abc") is None and split_command("/") is None
