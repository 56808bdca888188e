"""The coupon / group / demo / stats commands, run as a newcomer runs them (subprocess, SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import REPO_ROOT
from bot.offers.csv_codes import CodesFileError, parse_codes
from tests.test_cli import embedded_env


def bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = embedded_env(tmp_path)
    assert bot("db", "upgrade", env=environment).returncode == 0
    return environment


def test_batch_create_show_codes_redeem_and_duplicate_create(env: dict[str, str], tmp_path: Path) -> None:
    created = bot("coupon", "batch", "create", "spring", "--title", "满99减20", "--stock", "5", "--valid-days", "7",
                  env=env)
    assert created.returncode == 0, created.stderr
    again = bot("coupon", "batch", "create", "spring", "--title", "x", "--stock", "1", env=env)
    assert again.returncode == 1 and "exists already" in again.stderr
    huge = bot("coupon", "batch", "create", "huge", "--title", "x", "--stock", "100000000000", env=env)
    assert huge.returncode == 1 and "--stock must be at most 10,000,000" in huge.stderr
    shown = json.loads(bot("coupon", "batch", "show", "spring", "--json", env=env).stdout)
    assert {k: shown[k] for k in ("name", "stock", "issued", "redeemed", "expired", "remaining")} == {
        "name": "spring", "stock": 5, "issued": 0, "redeemed": 0, "expired": 0, "remaining": 5
    }
    assert json.loads(bot("coupon", "codes", "spring", "--json", env=env).stdout) == []


def test_imported_codes_csv_errors_name_the_line(env: dict[str, str], tmp_path: Path) -> None:
    duplicates = tmp_path / "dup.csv"
    duplicates.write_text("券码\nYZ001\nYZ002\nYZ001\n", encoding="utf-8")
    result = bot("coupon", "batch", "create", "yz", "--title", "有赞券", "--stock", "0", "--codes-file",
                 str(duplicates), env=env)
    assert result.returncode == 1 and "dup.csv:4: duplicate code YZ001 (first on line 2)" in result.stderr
    good = tmp_path / "good.csv"
    good.write_text("code\nYZ001\nYZ002\n", encoding="utf-8")
    assert bot("coupon", "batch", "create", "yz", "--title", "有赞券", "--stock", "0", "--codes-file", str(good),
               env=env).returncode == 0
    assert json.loads(bot("coupon", "batch", "show", "yz", "--json", env=env).stdout)["stock"] == 2
    more = tmp_path / "more.csv"
    more.write_text("YZ003\nYZ002\n", encoding="utf-8")
    refused = bot("coupon", "batch", "import-codes", "yz", str(more), env=env)
    assert refused.returncode == 1 and "exist already" in refused.stderr and "YZ002" in refused.stderr
    more.write_text("YZ003\nYZ004\n", encoding="utf-8")
    assert bot("coupon", "batch", "import-codes", "yz", str(more), env=env).returncode == 0
    assert json.loads(bot("coupon", "batch", "show", "yz", "--json", env=env).stdout)["stock"] == 4


def test_codes_file_problems() -> None:
    with pytest.raises(CodesFileError, match=r":1: the file is empty"):
        parse_codes(b"", "f.csv")
    with pytest.raises(CodesFileError, match=r"f.csv:3: not UTF-8"):
        parse_codes("A1\nB2\n券码".encode("gbk"), "f.csv")
    with pytest.raises(CodesFileError, match=r"f.csv:2: empty code"):
        parse_codes(b"A1\n\nB2\n", "f.csv")
    assert parse_codes(b"\xef\xbb\xbfcode\na1 \nB2\n\n", "f.csv") == ["A1", "B2"]


def test_demo_seed_creates_only_what_is_missing(env: dict[str, str]) -> None:
    first = bot("demo", "seed", env=env)
    assert "created coupon batch new_customer" in first.stdout
    assert "exists" in bot("demo", "seed", env=env).stdout
    shown = json.loads(bot("coupon", "batch", "show", "new_customer", "--json", env=env).stdout)
    assert (shown["stock"], shown["per_customer"], shown["valid_days"]) == (1000, 1, 30)
    pools = bot("group", "pool", "list", env=env).stdout
    assert "fuli" in pools and ".png" in pools


def test_persona_check_names_the_line_of_a_batch_or_pool_that_does_not_exist(
    env: dict[str, str], tmp_path: Path
) -> None:
    import shutil

    persona = tmp_path / "persona"
    shutil.copytree(REPO_ROOT / "persona" / "demo", persona)
    text = (persona / "persona.yaml").read_text(encoding="utf-8")
    (persona / "persona.yaml").write_text(text.replace("coupon: new_customer", "coupon: new_2025"), encoding="utf-8")
    line = next(i for i, row in enumerate((persona / "persona.yaml").read_text().splitlines(), 1) if "new_2025" in row)
    assert bot("demo", "seed", env=env).returncode == 0
    result = bot("persona", "check", str(persona), env=env)
    assert result.returncode == 1
    assert f"persona.yaml:{line}: offers.new_customer.coupon: no coupon batch named 'new_2025'" in result.stdout
    # Without a database, it says the offers were not checked instead of guessing.
    elsewhere = {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'none' / 'x.sqlite3'}"}
    unchecked = bot("persona", "check", str(persona), env=elsewhere)
    assert unchecked.returncode == 0 and "offers not checked" in unchecked.stdout


def test_stats_funnel_prints_each_step_with_conversion(env: dict[str, str]) -> None:
    assert bot("demo", "seed", env=env).returncode == 0
    script = "/follow taobao_card\n新人\n入群\n"
    chat = subprocess.run([sys.executable, "-m", "bot", "chat", "--as", "customer:amy"], input=script, env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr
    code = json.loads(bot("coupon", "codes", "new_customer", "--json", env=env).stdout)[0]["code"]
    assert bot("coupon", "redeem", code, "--order", "T1", "--amount", "99", env=env).returncode == 0
    report = json.loads(bot("stats", "funnel", "--by", "source", "--json", env=env).stdout)
    assert report == [{
        "source": "taobao_card",
        "counts": {"reach": 1, "followed": 1, "invited": 1, "coupon_issued": 1, "coupon_redeemed": 1},
        "rates": {"reach": None, "followed": 1.0, "invited": 1.0, "coupon_issued": 1.0, "coupon_redeemed": 1.0},
    }]
    printed = bot("stats", "funnel", env=env).stdout
    assert "coupon_redeemed" in printed and "1 (100%)" in printed
