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
    # each of these was built whole (hundreds of MB, or seconds of CPU in one step) before a cap looked at it
    "lipsum": "{{ lipsum(200000)|length }}",
    "format_fields": "{{ ('{0}'*10000).format('a'*40000)|length }}",
    "format_map_fields": "{{ ('{a}'*8000).format_map({'a': 'x'*40000})|length }}",
    "percent_mapping": "{{ (('%(a)s'*8000) % {'a': 'x'*40000})|length }}",
    "format_filter_mapping": "{{ ('%(a)s'*8000)|format(a='x'*40000)|length }}",
    "translate": "{% set t = ''.maketrans({'a': 'b'*1000}) %}{{ ('a'*50000).translate(t)|length }}",
    "expandtabs": "{{ ('\\t'*50000).expandtabs(1000)|length }}",
    "join_of_a_generator": "{{ ''.join(range(500)|map('string')|map('center', 1000))|length }}",
    "list_of_one_long_list": "{% set inner = ['a'*40000] %}{{ ([inner]*20000)|length }}",
    "literal_of_references": "{% set b = 'a'*40000 %}{{ [b, b, b, b, b, b, b, b, b, b]|length }}",
    "set_block_collects": "{% set b = 'a'*40000 %}{% set x %}{% for i in range(500) %}{% for j in range(30) %}{{ b }}"
    "{% endfor %}{% endfor %}{% endset %}{{ x|length }}",
    "macro_collects": "{% set b = 'a'*40000 %}{% macro m() %}{% for i in range(500) %}{% for j in range(30) %}{{ b }}"
    "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}",
    "filter_block_collects": "{% filter length %}{% for i in range(500) %}{% for j in range(30) %}{{ 'a'*40000 }}"
    "{% endfor %}{% endfor %}{% endfilter %}",
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


async def test_a_backtracking_regex_cannot_stall_the_bot(tmp_path: Path, postgres_url: str) -> None:
    """`(\\d+\\s*)+(个月|周)` with Python's re takes 2^n steps on n digits not followed by 个月/周.

    Against `python -m bot serve`, so that a stalled event loop fails the test at WeChat's own 5 s
    (in-process, a backtracking regex would hang the test itself)."""
    import aiohttp

    from tests.conftest import REDIS_URL
    from tests.server_process import start_server

    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    tags = folder / "tags.yaml"
    tags.write_text(
        tags.read_text(encoding="utf-8").replace(r"(怀孕|孕)\s*\d+\s*(个月|周)|预产期", r"(\d+\s*)+(个月|周)"),
        encoding="utf-8",
    )
    assert run_bot("persona", "check", str(folder), env=embedded_env(tmp_path)).returncode == 0
    server = await start_server(tmp_path, PERSONA=str(folder), DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL)
    try:
        peer = WeChatPeer()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for text in ("我的订单号 " + "1" * 40 + " 怎么还没到", "宝宝 8 个月"):
                query, body = peer.plain(text_xml("o" + secrets.token_hex(8), text))
                async with http.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                    assert response.status == 200
                    assert peer.read_reply(await response.text())["Content"]  # answered passively, in time
    finally:
        server.process.kill()  # a stalled loop would not see SIGTERM
        await server.process.wait()


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


#: The wechat_oa default greeting of the demo persona (its first line; the key is on the line before).
OA_GREETING = "        {% if contact and contact.name %}{{ contact.name }}，{% endif %}感谢关注棉棉小屋 🌱 我是{{ persona.name }}。"
#: Only a follower who came through this scene takes the branch: `persona check` renders with another source.
HIDDEN_SCENE = "never_sampled"


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize("name", ["filter_block_collects", "lipsum", "format_fields"])
async def test_a_bomb_in_a_branch_the_check_never_takes_is_bounded_when_a_customer_takes_it(
    name: str, tmp_path: Path, postgres_url: str
) -> None:
    """The check cannot take every branch: at serve time the same budget stops the render before it builds
    anything big (each of these built 750 MB, or ran for 12 s on the event loop, once a customer took it)."""
    from tests.conftest import REDIS_URL
    from tests.server_process import start_server
    from tests.wechat_peer import event_xml

    folder = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    persona_file = folder / "persona.yaml"
    text = persona_file.read_text(encoding="utf-8")
    assert OA_GREETING in text
    bomb = "{% if source == '" + HIDDEN_SCENE + "' %}" + BOMBS[name] + "{% endif %}"
    persona_file.write_text(text.replace(OA_GREETING, OA_GREETING + bomb), encoding="utf-8")
    assert run_bot("persona", "check", str(folder), env=embedded_env(tmp_path)).returncode == 0

    server = await start_server(tmp_path, PERSONA=str(folder), DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL)
    try:
        import aiohttp

        peer = WeChatPeer()
        async with aiohttp.ClientSession() as http:
            before = peak_memory_mb(server.process.pid)
            query, body = peer.plain(event_xml("o" + secrets.token_hex(8), "subscribe", EventKey=f"qrscene_{HIDDEN_SCENE}"))
            async with http.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                assert response.status == 200
            async with http.get(f"{server.base_url}/healthz") as response:
                assert response.status == 200
            # Another customer is still greeted as usual.
            query, body = peer.plain(event_xml("o" + secrets.token_hex(8), "subscribe", EventKey="qrscene_taobao_card"))
            async with http.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                assert "淘宝" in peer.read_reply(await response.text())["Content"]
        assert peak_memory_mb(server.process.pid) - before < 100
        assert "template" in server.log()  # the refused render is in our log
    finally:
        server.process.terminate()
        await server.process.wait()


def persona_with_many_heavy_greetings(folder: Path, count: int = 1000) -> Path:
    """Each greeting within the per-render budget, all of them together ~12 s of CPU to check."""
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    heavy = "{% for a in range(900) %}{% for b in range(18) %}{% endfor %}{% endfor %}你好"
    persona_file = folder / "persona.yaml"
    text = persona_file.read_text(encoding="utf-8")
    anchor = "  sources:\n    douyin_live: |-\n"
    assert anchor in text
    greetings = "".join(f"    scene_{index}: '{heavy}'\n" for index in range(count))
    persona_file.write_text(text.replace(anchor, "  sources:\n" + greetings + "    douyin_live: |-\n", 1), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("limits", "refusal"), [
    ({"PERSONA_CHECK_CPU_SECONDS": "1", "PERSONA_CHECK_TIMEOUT_SECONDS": "300"}, "used more than 1 s of CPU"),
    ({"PERSONA_CHECK_CPU_SECONDS": "300", "PERSONA_CHECK_TIMEOUT_SECONDS": "1"}, "took longer than 1 s"),
], ids=["cpu-limit", "wall-clock-limit"])
def test_the_check_child_is_stopped_at_its_limits(tmp_path: Path, limits: dict[str, str], refusal: str) -> None:
    folder = persona_with_many_heavy_greetings(tmp_path / "p")
    result = run_bot("persona", "check", str(folder), env=embedded_env(tmp_path, **limits), timeout=120)
    assert result.returncode == 1, result.stdout
    assert f"refused: checking it {refusal}" in result.stdout
    if "CPU" in refusal:
        assert f"{folder / 'persona.yaml'}:" in result.stdout  # where it was when stopped


def test_the_render_budget_counts_the_renders_cpu_not_its_waiting() -> None:
    """A render that waited (for the GIL while another thread loaded a dictionary, or for the OS on a busy
    machine) did no work: a customer's greeting was refused with 'takes longer than 100 ms' under CI load.
    Work is still stopped at the budget."""
    import time

    from bot.persona.template_budget import CLOCK_EVERY, RENDER_SECONDS, BudgetExceeded, budget_for_render, spend

    with budget_for_render():
        time.sleep(RENDER_SECONDS * 1.5)
        for _ in range(4 * CLOCK_EVERY):
            spend()
    with budget_for_render(), pytest.raises(BudgetExceeded, match="ms of CPU"):
        busy_until = time.thread_time() + RENDER_SECONDS * 1.2
        while time.thread_time() < busy_until:
            pass
        for _ in range(CLOCK_EVERY):
            spend()
