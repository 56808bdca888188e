"""`python -m bot chat --as staff:ID` reaches the same command layer; `python -m bot audit` lists attempts."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.test_cli import embedded_env, run_bot


def test_console_staff_commands_and_audit_listing(tmp_path: Path) -> None:
    admin = "alice" + secrets.token_hex(3)
    agent = "bob" + secrets.token_hex(3)
    staff = tmp_path / "staff.yaml"
    staff.write_text(f"staff:\n  {admin}: admin\n  {agent}: agent\n", encoding="utf-8")
    env = embedded_env(tmp_path, STAFF_FILE=str(staff))
    assert run_bot("db", "upgrade", env=env).returncode == 0

    customer = run_bot("chat", "--as", "customer:c1", env=env, stdin="/follow taobao_card\n/统计\n/quit\n")
    assert "这个指令只有工作人员可以使用" in customer.stdout

    admin_run = run_bot(
        "chat", "--as", f"staff:{admin}", env=env,
        stdin="/help\n/标签 c1 高意向\n/查 c1\n＃统计\n/lokup c1\n/quit\n",
    )
    out = admin_run.stdout
    assert "你（admin）可以用的命令" in out and "/群发 <已有标签> <内容>" in out  # the layer's help, not the console's
    assert "已给 c1 打上「高意向」" in out
    assert "标签：高意向" in out and "来自 taobao_card" in out
    assert "今天（" in out
    assert "你是不是想用 /查 <顾客ID>" in out

    agent_run = run_bot("chat", "--as", f"staff:{agent}", env=env, stdin="/统计\n/quit\n")
    assert "你的角色（agent）不能使用 /统计" in agent_run.stdout

    listing = run_bot("audit", "--since", "1h", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any("c1 (-)" in line and "stats" in line and "refused" in line for line in lines)
    assert any(f"{admin} (admin)" in line and "tag 'c1 高意向'" in line and "allowed" in line for line in lines)
    assert any(f"{agent} (agent)" in line and "refused" in line for line in lines)

    only_agent = run_bot("audit", "--who", agent, env=env).stdout.splitlines()
    assert only_agent and all(agent in line for line in only_agent)
    assert "no audited commands" in run_bot("audit", "--since", "2999-01-01", env=env).stdout
    assert run_bot("audit", "--since", "yesterday-ish", env=env).returncode == 2
