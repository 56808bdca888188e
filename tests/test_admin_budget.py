"""Admin content has a budget: template and regex bombs are refused by `persona check` and at reload,
with `file:line`, while the previous persona keeps serving and /healthz answers."""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.config import REPO_ROOT
from tests.conftest import context_of
from tests.test_cli import embedded_env, run_bot
from tests.wechat_peer import WeChatPeer, text_xml

FALLBACK = "    回复「转人工」，我请育儿顾问同事来帮你解答～"
#: The fallback line's template starts on this line of the demo persona.yaml (the key is on 40).
FALLBACK_LINE = 40

BOMBS = {
    # each exponent is within the ≤100 cap; the numbers are not
    "tower_of_powers": "{{ ((((10**100)**100)**100)**100) > 0 }}",
    # inside a branch the samples never take, and no constant folding at compile time either
    "center_in_a_branch": "{% if contact and contact.name == 'never' %}{{ 'a'|center(999999999) }}{% endif %}",
    "center_from_a_variable": "{% set w = 999999999 %}{{ 'a'|center(w) }}",
    "three_nested_loops": "{% for a in [0]*10000 %}{% for b in [0]*10000 %}{% for c in [0]*10000 %}{% endfor %}"
    "{% endfor %}{% endfor %}",
    "two_nested_loops": "{% for a in [0]*10000 %}{% for b in [0]*10000 %}{% endfor %}{% endfor %}",
    "printf_width": "{{ '%999999999d'|format(1) }}",
    "str_format_width": "{{ '{:>999999999}'.format('a') }}",
    "ljust": "{% set w = 999999999 %}{{ 'a'.ljust(w) }}",
    "indent": "{% set w = 999999999 %}{{ 'a\\nb'|indent(w) }}",
    "wordwrap": "{{ 'a b'|wordwrap(999999999) }}",
    "replace_growth": "{{ ('a'*10000)|replace('a', 'a'*10000) }}",
    "doubling_with_tilde": "{% set x = 'aaaaaaaaaa' %}" + "{% set x = x ~ x %}" * 30 + "{{ x|length }}",
    "doubling_with_plus": "{% set x = 'aaaaaaaaaa' %}" + "{% set x = x + x %}" * 30 + "{{ x|length }}",
    "list_repeat": "{{ (['a'*5000]*1000)|join }}",
    "fan_out_macro": "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% endif %}{% endmacro %}{{ m(40) }}",
}


def persona_with_fallback(folder: Path, template: str) -> Path:
    if not folder.exists():
        shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    persona_file = folder / "persona.yaml"
    text = (REPO_ROOT / "persona" / "demo" / "persona.yaml").read_text(encoding="utf-8")
    assert FALLBACK in text
    persona_file.write_text(text.replace(FALLBACK, "    " + template), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_persona_check_refuses_each_template_bomb_with_its_line(name: str, tmp_path: Path) -> None:
    folder = persona_with_fallback(tmp_path / "p", BOMBS[name])
    result = run_bot("persona", "check", str(folder), env=embedded_env(tmp_path), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{folder / 'persona.yaml'}:{FALLBACK_LINE}:" in result.stdout


def test_a_large_but_reasonable_template_still_passes(tmp_path: Path) -> None:
    reasonable = "{% for a in range(20) %}{% for b in range(20) %}{{ '%3d'|format(a * b) }}{% endfor %}{% endfor %}"
    folder = persona_with_fallback(tmp_path / "p", reasonable + "{{ 'ok'|center(40) }}")
    result = run_bot("persona", "check", str(folder), env=embedded_env(tmp_path), timeout=60)
    assert result.returncode == 0, result.stdout


def test_persona_check_refuses_a_regex_it_cannot_run_in_linear_time(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    tags = folder / "tags.yaml"
    tags.write_text(
        tags.read_text(encoding="utf-8").replace(r"(怀孕|孕)\s*\d+\s*(个月|周)|预产期", r"(孕)\s*(\d+)\1"),
        encoding="utf-8",
    )
    result = run_bot("persona", "check", str(folder), env=embedded_env(tmp_path), timeout=60)
    assert result.returncode == 1
    assert "tags.yaml:39:" in result.stdout and "linear-time" in result.stdout


async def test_a_backtracking_regex_cannot_stall_the_bot(tmp_path: Path, make_settings: Any, start_bot: Any) -> None:
    """`(\\d+\\s*)+(个月|周)` with Python's re takes 2^n steps on n digits not followed by 个月/周."""
    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    tags = folder / "tags.yaml"
    tags.write_text(
        tags.read_text(encoding="utf-8").replace(r"(怀孕|孕)\s*\d+\s*(个月|周)|预产期", r"(\d+\s*)+(个月|周)"),
        encoding="utf-8",
    )
    assert run_bot("persona", "check", str(folder), env=embedded_env(tmp_path)).returncode == 0
    client = await start_bot(make_settings(PERSONA=str(folder)))
    peer = WeChatPeer()
    for text in ("我的订单号 " + "1" * 40 + " 怎么还没到", "宝宝 8 个月"):
        query, body = peer.plain(text_xml("o" + secrets.token_hex(8), text))
        response = await client.post("/wechat/oa", params=query, data=body)
        assert response.status == 200


@pytest.mark.parametrize("name", ["tower_of_powers", "center_in_a_branch", "three_nested_loops", "two_nested_loops"])
async def test_a_bomb_saved_into_a_running_bot_is_refused_and_the_old_persona_keeps_serving(
    name: str, tmp_path: Path, make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    client = await start_bot(make_settings(PERSONA=str(folder)))
    context = context_of(client)
    before = context.personas.for_channel("wechat_oa")
    fallback = before.say("fallback")

    persona_with_fallback(folder, BOMBS[name])
    with caplog.at_level(logging.ERROR, logger="siyu.persona"):
        await context.reload_personas()
    assert context.personas.for_channel("wechat_oa") is before
    assert any(f"{folder / 'persona.yaml'}:{FALLBACK_LINE}:" in record.getMessage() for record in caplog.records)

    assert (await client.get("/healthz")).status == 200
    peer = WeChatPeer()
    query, body = peer.plain(text_xml("o" + secrets.token_hex(8), "世界上最高的山是哪座"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert peer.read_reply(await response.text())["Content"] == fallback


async def test_a_regex_rule_refused_at_reload_keeps_the_old_persona(
    tmp_path: Path, make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    client = await start_bot(make_settings(PERSONA=str(folder)))
    context = context_of(client)
    before = context.personas.for_channel("wechat_oa")
    tags = folder / "tags.yaml"
    tags.write_text(
        tags.read_text(encoding="utf-8").replace(r"(怀孕|孕)\s*\d+\s*(个月|周)|预产期", r"(?=孕)(孕)\s*\d+"),
        encoding="utf-8",
    )
    with caplog.at_level(logging.ERROR, logger="siyu.persona"):
        await context.reload_personas()
    assert context.personas.for_channel("wechat_oa") is before
    assert any(f"{tags}:39:" in record.getMessage() for record in caplog.records)
    assert (await client.get("/healthz")).status == 200
