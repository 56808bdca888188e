"""`announce check`: script templates and sale files, with file:line errors; sandbox; live reload."""

from __future__ import annotations

import io
import os
import shutil
from decimal import Decimal
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.campaigns.library import LiveLibrary
from bot.config import REPO_ROOT

FRONT = "---\nname: probe\nchannels: [wechat_oa]\ndefault_segment: 老客\n---\n## 老客\n"


def check(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["announce", "check", str(path)])
    return code, out.getvalue()


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    root = tmp_path / "scripts"
    shutil.copytree(REPO_ROOT / "scripts", root)
    return root


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


def test_the_demo_scripts_check_clean() -> None:
    code, out = check(REPO_ROOT / "scripts")
    assert code == 0, out
    assert "3 script(s), 1 sale(s), 1 campaign(s)" in out


def test_undefined_variables_are_reported_at_their_line(scripts: Path) -> None:
    launch = scripts / "flash_sale" / "launch.j2"
    edit(launch, "抢完即止～", "抢完即止～{{ shop_name }}")  # an unknown variable (static check)
    code, out = check(scripts)
    line = launch.read_text().splitlines().index(next(l for l in launch.read_text().splitlines() if "shop_name" in l)) + 1
    assert code == 1
    assert f"{launch}:{line}: undefined variable 'shop_name'" in out


def test_a_misspelt_attribute_fails_the_render_check_at_its_line(scripts: Path) -> None:
    teaser = scripts / "flash_sale" / "teaser.j2"
    edit(teaser, "{{ item.flash_price }}（日常", "{{ item.flash_prise }}（日常")
    code, out = check(scripts)
    lines = teaser.read_text().splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "flash_prise" in l)
    assert code == 1 and f"{teaser}:{line}: fails to render" in out and "flash_prise" in out


def test_bad_prices_and_a_flash_price_not_below_the_original_are_reported(scripts: Path) -> None:
    sale = scripts / "flash_sale" / "sale.yaml"
    edit(sale, 'original_price: "59.90"', 'original_price: "五十九块九"')
    edit(sale, 'flash_price: "79.00"', 'flash_price: "129.00"')
    code, out = check(scripts)
    lines = sale.read_text().splitlines()
    assert code == 1
    assert f"{sale}:{next(i for i, l in enumerate(lines, 1) if '五十九块九' in l)}: items.0.original_price: price" in out
    assert "items.1: flash_price 129.00 must be below original_price 129.00" in out


def test_a_dated_sale_starting_in_the_past_is_refused(scripts: Path) -> None:
    sale = scripts / "flash_sale" / "sale.yaml"
    edit(sale, 'weekly:\n  weekday: 3\n  start: "20:00"\n  end: "22:00"\n',
         "starts_at: 2025-01-08 20:00\nends_at: 2030-01-08 22:00\n")
    code, out = check(scripts)
    line = next(i for i, l in enumerate(sale.read_text().splitlines(), 1) if l.startswith("starts_at"))
    assert code == 1 and f"{sale}:{line}: starts_at 2025-01-08 20:00 is in the past" in out


@pytest.mark.parametrize(
    "payload",
    [
        "{{ sale.__class__.__mro__ }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ sale|attr('__class__') }}",
        "{{ range.__globals__ }}",
        "{{ '{0.__class__}'.format(sale) }}",
        "{{ sale['__dict__'] }}",
        "{% for x in range(200) %}{% for y in range(200) %}{% for z in range(200) %}{% endfor %}{% endfor %}{% endfor %}",
        "{{ 'x' * 100000 }}",
        "{% for x in range(150) %}{{ sale.items }}{{ sale.items }}{% endfor %}",
    ],
)
def test_templates_reaching_python_internals_or_running_away_are_refused(scripts: Path, payload: str) -> None:
    probe = scripts / "probe.j2"
    probe.write_text(FRONT + "你好\n" + payload + "\n")
    code, out = check(scripts)
    assert code == 1
    assert f"{probe}:" in out
    assert any(word in out for word in ("Python internals", "sandbox", "unsafe")), out


def test_an_edit_reloads_and_a_broken_edit_keeps_the_last_good_version(scripts: Path) -> None:
    live = LiveLibrary(scripts, min_interval=0)
    sale = scripts / "flash_sale" / "sale.yaml"
    assert live.current().sales["flash_sale/sale.yaml"].definition.items[0].flash_price == Decimal("29.90")
    edit(sale, 'flash_price: "29.90"', 'flash_price: "25.90"')
    os.utime(sale, ns=(1, 2_000_000_000_000_000_000))
    assert str(live.current().sales["flash_sale/sale.yaml"].definition.items[0].flash_price) == "25.90"
    edit(sale, 'flash_price: "25.90"', 'flash_price: "99.90"')  # above the original: refused
    os.utime(sale, ns=(1, 2_000_000_000_100_000_000))
    assert str(live.current().sales["flash_sale/sale.yaml"].definition.items[0].flash_price) == "25.90"
    assert any("must be below original_price" in str(issue) for issue in live.issues)


def test_template_message_fields_are_checked_like_scripts(scripts: Path) -> None:
    campaigns = scripts / "campaigns.yaml"
    edit(campaigns, "  exclude:\n", "  template:\n    id: TPL1\n    fields: {first: \"{{ sale.__class__ }}\", "
                                    "keyword1: \"{{ shop }}\"}\n  exclude:\n")
    code, out = check(scripts)
    line = campaigns.read_text().splitlines().index("  template:") + 1
    assert code == 1
    assert f"{campaigns}:{line}: template field 'first': template reaches for Python internals" in out
    assert f"{campaigns}:{line}: template field 'keyword1': undefined variable 'shop'" in out


def test_announcement_channels_are_oa_wecom_and_ai_bot_groups(scripts: Path) -> None:
    campaigns = scripts / "campaigns.yaml"
    edit(campaigns, "channel: wechat_oa", "channel: sms")
    code, out = check(scripts)
    assert code == 1 and "channel 'sms': announcements go out on wechat_oa, wecom, wecom_aibot" in out
    edit(campaigns, "channel: sms", "channel: wecom")
    code, out = check(scripts)
    # The scripts must be written for the campaign's channel; WeCom itself is no longer "not built".
    assert code == 1 and "is not written for channel 'wecom'" in out and "not built" not in out
    for script in (scripts / "flash_sale").glob("*.j2"):
        edit(script, "channels: [wechat_oa]", "channels: [wechat_oa, wecom]")
    assert check(scripts)[0] == 0
