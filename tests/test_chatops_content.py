"""The command table and its wording stay in step: every command worded, admin commands 1:1 only."""

from __future__ import annotations

from pathlib import Path

from bot.chatops.parsing import CommandNames, split_command
from bot.chatops.roles import Role
from bot.chatops.specs import COMMANDS
from bot.chatops.texts import ChatopsTexts


def test_every_command_has_wording_and_a_chinese_alias() -> None:
    texts = ChatopsTexts.load()
    assert set(texts.data.commands) == set(COMMANDS)
    for name in COMMANDS:
        assert any("\u4e00" <= char <= "\u9fff" for alias in texts.command(name).aliases for char in alias), name


def test_a_command_with_no_roles_listed_is_refused_to_everyone() -> None:
    from bot.chatops.specs import CommandSpec

    unlisted = CommandSpec("new_command", frozenset())
    assert not any(unlisted.allows(role) for role in (*Role, None))
    assert not any(spec.allows(None) for spec in COMMANDS.values())


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
    assert split_command("/::)") is None and split_command("/:rose") is None  # WeChat emoticon codes


async def test_the_staff_file_is_reloaded_on_save_like_the_persona(tmp_path: Path) -> None:
    import asyncio

    from bot.chatops.roles import StaffDirectory
    from bot.events import Channel, Event, EventKind

    path = tmp_path / "staff.yaml"
    path.write_text("staff:\n  zhangsan: agent\n", encoding="utf-8")
    directory = StaffDirectory([path])
    event = Event(channel=Channel.WECOM, account="corp", sender="zhangsan", kind=EventKind.MESSAGE, type="text")
    assert directory.role_of(event) is Role.AGENT
    stop = asyncio.Event()
    watcher = asyncio.create_task(directory.watch(stop))
    try:
        await asyncio.sleep(0.5)  # let the watcher arm
        path.write_text("staff:\n  zhangsan: admin\n", encoding="utf-8")
        for _ in range(100):
            if directory.role_of(event) is Role.ADMIN:
                break
            await asyncio.sleep(0.1)
        assert directory.role_of(event) is Role.ADMIN
        path.write_text("staff: [not, a, mapping]\n", encoding="utf-8")  # a broken save keeps the list
        await asyncio.sleep(1.5)
        assert directory.role_of(event) is Role.ADMIN
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 5)


def test_the_staff_file_is_the_personas_else_a_top_level_one_unless_staff_file_names_one(tmp_path: Path) -> None:
    from bot.chatops.roles import StaffDirectory, staff_file_candidates
    from bot.events import Channel, Event, EventKind

    root, persona = tmp_path, tmp_path / "persona" / "demo"
    persona.mkdir(parents=True)
    (root / "staff.yaml").write_text("staff:\n  zhangsan: operator\n", encoding="utf-8")
    event = Event(channel=Channel.WECOM, account="corp", sender="zhangsan", kind=EventKind.MESSAGE, type="text")
    top_level = StaffDirectory(staff_file_candidates(None, persona, root))
    assert (top_level.role_of(event), top_level.source) == (Role.OPERATOR, root / "staff.yaml")
    (persona / "staff.yaml").write_text("staff:\n  zhangsan: admin\n", encoding="utf-8")
    own = StaffDirectory(staff_file_candidates(None, persona, root))
    assert (own.role_of(event), own.source) == (Role.ADMIN, persona / "staff.yaml")
    explicit = tmp_path / "elsewhere.yaml"
    explicit.write_text("staff:\n  zhangsan: agent\n", encoding="utf-8")
    assert StaffDirectory(staff_file_candidates(explicit, persona, root)).role_of(event) is Role.AGENT
