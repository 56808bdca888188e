"""Server CPU per hostile request: the unsigned 1 MB AES envelope, and, for scale, one real callback.

    .venv/bin/python bench/hostile.py [--requests N] [--clients C] [--tree DIR]

Starts `python -m bot serve` (production, safe mode, SQLite and the in-process store: nothing
here reaches a database) twice: with the default MAX_BODY_BYTES (64 KB: the envelope is
refused on its Content-Length) and with MAX_BODY_BYTES=2 MB (the envelope is read, its
<Encrypt> found by the bounded scan, msg_signature checked, and refused: nothing parsed).
The envelope is the finding's shape: ~140,000 nested elements around a well-formed <Encrypt>,
signed with the wrong token. Sent from C concurrent clients; the server's CPU (utime+stime
from /proc, all threads) is read before and after, after a warm-up. Prints ms of server
CPU per request and the answers' statuses. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))
import _load  # noqa: E402
from tests.wechat_peer import TEST_AES_KEY, TEST_APPID, TEST_TOKEN, WeChatPeer, sign, text_xml  # noqa: E402


def hostile_envelope(size: int = 1024 * 1024) -> tuple[dict[str, str], bytes]:
    ciphertext = base64.b64encode(secrets.token_bytes(96)).decode()
    head = f"<xml><ToUserName><![CDATA[gh_siyu_demo]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
    body = (head + "<a>" * ((size - len(head) - 6) // 3) + "</xml>").encode()
    ts, nonce = str(int(time.time())), secrets.token_hex(5)
    query = {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes", "signature": sign("forged", ts, nonce),
             "msg_signature": sign("forged", ts, nonce, ciphertext)}
    return query, body


def start_server(workdir: Path, max_body: int | None, tree: Path = REPO) -> tuple[subprocess.Popen, int]:
    port = _load.free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "PERSONA", "REDIS_"))}
    env.update(
        BOT_ENV="production", BOT_HOST="127.0.0.1", BOT_PORT=str(port), BOT_OPS_PORT="0",
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}",
        PERSONA=str(REPO / "persona" / "demo"), PERSONA_HISTORY_DIR=str(workdir / "history"),
        WECHAT_OA_TOKEN=TEST_TOKEN, WECHAT_OA_APPID=TEST_APPID, WECHAT_OA_AES_KEY=TEST_AES_KEY,
        WECHAT_API_BASE="http://127.0.0.1:9", LOG_LEVEL="ERROR", LOG_FORMAT="text",
    )
    if max_body is not None:
        env["MAX_BODY_BYTES"] = str(max_body)
    subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], cwd=tree, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _load.healthz_ok(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return proc, port


async def send(port: int, requests: list[tuple[dict[str, str], bytes]], clients: int) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    queue = list(requests)
    async with aiohttp.ClientSession() as http:
        async def worker() -> None:
            while queue:
                query, body = queue.pop()
                try:
                    async with http.post(f"http://127.0.0.1:{port}/wechat/oa", params=query, data=body) as response:
                        await response.read()
                        statuses[response.status] += 1
                except aiohttp.ClientError:
                    statuses[0] += 1  # connection closed on us (counted, not an error of the bench)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def measure(proc: subprocess.Popen, port: int, requests: list[tuple[dict[str, str], bytes]], clients: int) -> tuple[float, collections.Counter[int]]:
    asyncio.run(send(port, requests[:5], 1))  # warm-up
    before = _load.cpu_seconds(proc.pid)
    statuses = asyncio.run(send(port, requests, clients))
    return (_load.cpu_seconds(proc.pid) - before) / len(requests) * 1000, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="source tree to serve (e.g. `git archive` of an older commit, for comparison)")
    args = parser.parse_args()
    hostile = [hostile_envelope() for _ in range(args.requests)]
    peer = WeChatPeer(aes_key=TEST_AES_KEY)
    real = [peer.encrypted(text_xml("o" + secrets.token_hex(8), "你们一般几天发货？")) for _ in range(args.requests)]
    print(f"{args.requests} requests from {args.clients} clients; server CPU (utime+stime) per request")
    with tempfile.TemporaryDirectory() as tmp:
        for label, max_body in (("MAX_BODY_BYTES default (64 KB)", None), ("MAX_BODY_BYTES=2 MB", 2 * 1024 * 1024)):
            proc, port = start_server(_fresh(Path(tmp)), max_body, args.tree)
            try:
                cpu, statuses = measure(proc, port, hostile, args.clients)
                print(f"  unsigned 1 MB envelope, {label:32s} {cpu:7.2f} ms  statuses {dict(statuses)}")
                cpu, statuses = measure(proc, port, real, args.clients)
                print(f"  signed AES text message (for scale), {label:20s} {cpu:7.2f} ms  statuses {dict(statuses)}")
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    return 0


def _fresh(root: Path) -> Path:
    folder = root / secrets.token_hex(4)
    folder.mkdir()
    return folder


if __name__ == "__main__":
    sys.exit(main())
