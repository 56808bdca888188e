"""Helpers for the benchmarks (bench/webhook.py, bench/startup.py): request pools, a Python load generator, and the bare floor server.

Run as a subprocess (pinned by the caller with taskset):
  python bench/_load.py floor PORT                       bare aiohttp app answering POST with "success"
  python bench/_load.py rate  --port P --rate R --file F  open-loop fixed-rate run, prints one JSON line
  python bench/_load.py closed --port P --seconds S --file F --connections N
                                                          closed-loop max-throughput run (used without wrk)
The request file is a pickle of [(path_with_query: str, body: bytes), ...]; every entry is sent at most once
(each carries its own MsgId), so a run never trips the bot's deduplication.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PATH = "/wechat/oa"

#: Realistic customer questions for the demo persona (棉棉小屋, baby products). Roughly two thirds
#: should hit an FAQ entry (paraphrased, not copied), the rest are misses, small talk or keywords.
QUESTIONS = [
    # FAQ hits, paraphrased
    "今天下午下单明天能发货吗？",
    "你好，我昨天买的怎么还没发货呀",
    "一般几天能到上海",
    "你们发什么快递，可以发顺丰吗",
    "满多少包邮啊",
    "运费怎么算的",
    "我的快递到哪里了，物流两天没更新了",
    "怎么查物流单号",
    "地址填错了还能改吗",
    "拍错了，想取消订单",
    "纸尿裤买多了没拆封可以退吗",
    "七天无理由退货支持吗？",
    "退款怎么还没到账",
    "宝宝9公斤穿什么码的纸尿裤",
    "M码和L码怎么选啊",
    "拉拉裤和纸尿裤有啥区别",
    "宝宝8个月了可以换拉拉裤了吗",
    "宝宝屁屁红了怎么办",
    "奶粉几段怎么选，宝宝刚满6个月",
    "你们家奶粉是正品吗，怎么验真",
    "棉柔巾和湿巾有什么区别",
    "奶瓶要怎么消毒",
    "新人有优惠券吗",
    "秒杀是每周几",
    "怎么进宝妈群",
    "包裹卡好评返现怎么领",
    "能开发票吗？要公司抬头的",
    "客服几点上班",
    "ＭＭ码和Ｌ码哪个大",  # full-width, folded by NFKC
    # misses / out of scope
    "你们有实体店吗",
    "宝宝发烧38度怎么办",
    "今天天气怎么样",
    "能不能便宜一点",
    "你是机器人吗",
    "帮我查一下订单 202403150012345",
    "你好",
    "谢谢！",
    "在吗在吗",
    "哈哈哈",
    "我想投诉，收到的包装破了",
    "有没有适合两岁宝宝的绘本推荐",
    "秒杀",
    "新人",
]

#: What customers add around a question, each with a number that changes from message to message, so no
#: two texts are alike and no cache of cut text can flatter the figures (customers never repeat exactly).
DETAILS = [
    "订单号{n:015d}",
    "我的单号是{n:012d}",
    "{m}号下的单",
    "买了{m}包",
    "宝宝{m}个月了",
    "尾号{k:04d}",
    "第{m}次问了",
    "{m}点前能回复吗",
]


def customer_text(i: int, *, repeat: bool = False) -> str:
    """Message `i`: one of QUESTIONS with a changing detail before or after it (or the bare question)."""
    question = QUESTIONS[i % len(QUESTIONS)]
    if repeat:
        return question
    shape = (i // len(QUESTIONS)) % (2 * len(DETAILS))
    detail = DETAILS[shape % len(DETAILS)].format(n=1000 + i * 7919, m=1 + i % 28, k=i % 10000)
    return f"{detail}，{question}" if shape < len(DETAILS) else f"{question} {detail}"


SEND_HEADERS = "Content-Type: text/xml\r\nUser-Agent: Mozilla/4.0\r\n"


def make_sender(run_tag: str, i: int) -> str:
    """An openid-looking id (28 chars) that carries the run tag, so the run's Redis keys can be found."""
    return f"o{run_tag}{i:06d}".ljust(28, "x")[:28]


def msg_id_prefix(run_tag: str) -> str:
    """MsgIds are all digits; this prefix ties the run's dedupe keys together (then thread + 9-digit counter)."""
    return "7" + "".join(str(ord(c) % 10) for c in run_tag)[:7]


def build_pool(
    *,
    token: str,
    appid: str,
    aes_key: str | None,
    count: int,
    run_tag: str,
    start: int,
    senders: int = 2000,
    via_peer: int = 200,
    repeat_texts: bool = False,
) -> list[tuple[str, bytes]]:
    """`count` signed callbacks with unique MsgIds (prefix + 1 + start+i), as WeChat sends them.

    The first `via_peer` go through tests/wechat_peer.py exactly; the rest use a fast path for AES
    (wechatpy's encrypt plus the peer's XML round trips cost ~0.7 ms each, too slow for pools of 10^5),
    which is checked against wechatpy's decrypt and produces the same fields.
    """
    from tests.wechat_peer import OA_ACCOUNT, WeChatPeer, text_xml

    peer = WeChatPeer(token=token, appid=appid, aes_key=aes_key)
    fast = _FastEncryptor(token, appid, aes_key) if aes_key else None
    prefix = msg_id_prefix(run_tag) + "1"
    pool = []
    for i in range(start, start + count):
        sender = make_sender(run_tag, i % senders)
        xml = text_xml(sender, customer_text(i, repeat=repeat_texts), int(f"{prefix}{i:09d}"))
        if fast is None:
            query, body = peer.plain(xml)
        elif i - start < via_peer:
            query, body = peer.encrypted(xml)
        else:
            query, body = fast.encrypted(xml, sender, OA_ACCOUNT)
        pool.append((f"{PATH}?" + "&".join(f"{k}={v}" for k, v in query.items()), body))
    if fast is not None and count > via_peer:
        fast.check(pool[-1], peer)
    return pool


class _FastEncryptor:
    """WeChat's message encryption (AES-256-CBC, IV = key[:16], PKCS#7 to 32 bytes) without wechatpy's overhead."""

    def __init__(self, token: str, appid: str, aes_key: str) -> None:
        import base64

        self.token = token
        self.appid = appid.encode()
        self.key = base64.b64decode(aes_key + "=")

    def encrypted(self, xml: str, sender: str, account: str) -> tuple[dict[str, str], bytes]:
        import base64
        import secrets
        import struct

        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        text = xml.encode()
        plain = secrets.token_hex(8).encode() + struct.pack(">I", len(text)) + text + self.appid
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        encryptor = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        ciphertext = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
        ts, nonce = str(int(time.time())), secrets.token_hex(5)
        body = f"<xml><ToUserName><![CDATA[{account}]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>"
        query = {
            "signature": self.sign(self.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": sender,
            "encrypt_type": "aes",
            "msg_signature": self.sign(self.token, ts, nonce, ciphertext),
        }
        return query, body.encode()

    @staticmethod
    def sign(*parts: str) -> str:
        """WeChat's signature: SHA-1 over the sorted parts, concatenated (what WeChatSigner computes)."""
        import hashlib

        return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()

    def check(self, entry: tuple[str, bytes], peer) -> None:
        """The fast path's output must open with wechatpy's own decrypt and signature check."""
        from urllib.parse import parse_qsl

        target, body = entry
        query = dict(parse_qsl(target.partition("?")[2]))
        plain = peer.crypto.decrypt_message(body.decode(), query["msg_signature"], query["timestamp"], query["nonce"])
        assert "<MsgId>" in plain and query["openid"] in plain, plain


def _build_chunk(kwargs: dict) -> list[tuple[str, bytes]]:
    return build_pool(**kwargs)


def build_pool_parallel(processes: int = 2, **kwargs) -> list[tuple[str, bytes]]:
    """AES encryption is the slow part of building a pool: split it across processes."""
    count = kwargs.pop("count")
    start = kwargs.pop("start", 0)
    if count < 5000 or processes < 2:
        return build_pool(count=count, start=start, **kwargs)
    import multiprocessing

    step = -(-count // processes)
    chunks = [
        dict(kwargs, count=min(step, count - k), start=start + k) for k in range(0, count, step)
    ]
    # The workers must die on the SIGTERM that ends the pool: webhook.py's own SIGTERM handler (inherited
    # through fork) raised in a worker holding the task queue's lock, and the pool's exit waited forever.
    with multiprocessing.get_context("fork").Pool(processes, initializer=signal.signal,
                                                   initargs=(signal.SIGTERM, signal.SIG_DFL)) as workers:
        parts = workers.map(_build_chunk, chunks)
    return [item for part in parts for item in part]


def write_pool(path: Path, pool: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as f:
        pickle.dump(pool, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_wrk_pool(path: Path, pool: list[tuple[str, bytes]]) -> None:
    """One request a line: path<TAB>body (bodies have no tabs or newlines)."""
    with open(path, "wb") as f:
        for target, body in pool:
            assert b"\t" not in body and b"\n" not in body
            f.write(target.encode() + b"\t" + body + b"\n")


# --- measurement -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


class Result:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.bad_status = 0
        self.bad_body = 0
        self.replies = 0
        self.successes = 0
        self.statuses: dict[int, int] = {}
        self.first_error = ""

    def record(self, latency: float, status: int, body: bytes) -> None:
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != 200:
            self.bad_status += 1
            if not self.first_error:
                self.first_error = f"{status} {body[:200]!r}"
        elif b"<xml>" in body:
            self.replies += 1
        elif body.strip() == b"success":
            self.successes += 1
        else:
            self.bad_body += 1
            if not self.first_error:
                self.first_error = f"200 {body[:200]!r}"

    def summary(self, elapsed: float, **extra) -> dict:
        lat = sorted(self.latencies)
        return {
            "requests": len(lat),
            "elapsed": elapsed,
            "rate": len(lat) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(lat, 50) * 1000,
            "p90_ms": percentile(lat, 90) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": (lat[-1] * 1000) if lat else float("nan"),
            "errors": self.errors + self.bad_status + self.bad_body,
            "io_errors": self.errors,
            "bad_status": self.bad_status,
            "bad_body": self.bad_body,
            "replies": self.replies,
            "successes": self.successes,
            "statuses": self.statuses,
            "first_error": self.first_error,
            **extra,
        }


class Connection:
    """A minimal HTTP/1.1 keep-alive client (answers must carry Content-Length). A server that closes
    after each answer (gunicorn's sync worker says `Connection: close`) gets a new connection per request,
    as a real client would open one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader = reader
        self.writer = writer
        self.port = port
        self.closed_by_server = False

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.closed_by_server:
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.closed_by_server = False
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                self.closed_by_server = True
        if length is None:
            raise ConnectionError("response without Content-Length")
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def encode_requests(pool: list[tuple[str, bytes]], port: int) -> list[bytes]:
    return [
        (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{SEND_HEADERS}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for target, body in pool
    ]


async def run_rate(
    port: int, requests: list[bytes], rate: float, max_connections: int, timeout: float, limit: float
) -> dict:
    """Open loop: request i is due at t0 + i/rate; latency counts from when it was due, not when sent.
    Whatever is unanswered `limit` seconds after the start is cut off and counted as an error."""
    loop = asyncio.get_running_loop()
    result = Result()
    idle: deque[Connection] = deque()
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    max_lag = 0.0

    # Open a few connections up front, as WeChat's servers keep connections alive.
    for _ in range(min(8, max_connections)):
        idle.append(await Connection.open(port))
        opened += 1

    async def one(request: bytes, due: float) -> None:
        nonlocal opened
        async with slots:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await Connection.open(port)
                    opened += 1
                status, body = await asyncio.wait_for(conn.exchange(request), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError) as exc:
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                return
            result.record(loop.time() - due, status, body)
            idle.append(conn)

    tasks = []
    t0 = loop.time() + 0.05
    for i, request in enumerate(requests):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        tasks.append(asyncio.ensure_future(one(request, due)))
        if loop.time() > t0 + limit:
            break
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, t0 + limit - loop.time()))
    for task in pending:
        task.cancel()
    unfinished = len(pending) + len(requests) - len(tasks)
    result.errors += unfinished
    elapsed = loop.time() - t0
    for conn in idle:
        conn.close()
    return result.summary(elapsed, connections_opened=opened, generator_max_lag_ms=max_lag * 1000, unfinished=unfinished)


async def run_closed(port: int, requests: list[bytes], seconds: float, connections: int, timeout: float) -> dict:
    """Closed loop: `connections` workers each send the next request as soon as the last one is answered."""
    loop = asyncio.get_running_loop()
    result = Result()
    it = iter(requests)
    exhausted = False
    t0 = loop.time()
    stop_at = t0 + seconds

    async def worker() -> None:
        nonlocal exhausted
        conn = await Connection.open(port)
        while loop.time() < stop_at:
            request = next(it, None)
            if request is None:
                exhausted = True
                break
            start = loop.time()
            try:
                status, body = await asyncio.wait_for(conn.exchange(request), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError) as exc:
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = await Connection.open(port)
                continue
            result.record(loop.time() - start, status, body)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return result.summary(loop.time() - t0, pool_exhausted=exhausted)


# --- the floor -----------------------------------------------------------------------------------


def serve_floor(port: int) -> None:
    """The least an aiohttp app can do for the same request: read the body, answer "success"."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(PATH, receive)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def pg_admin(*statements: str, server_url: str = PG_ADMIN) -> None:
    """Run statements (CREATE/DROP DATABASE) on the maintenance database."""
    import asyncpg

    conn = await asyncpg.connect(server_url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, all its threads (from /proc; children not included); NaNs once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan"), float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads."""
    return sum(_cpu_times(pid))


def system_cpu_seconds(pid: int) -> float:
    """stime alone (the kernel's share: syscalls, socket I/O) of a process, all its threads."""
    return _cpu_times(pid)[1]


def total_cpu_seconds(pids: list[int]) -> float:
    """utime + stime summed over processes; one that has gone counts nothing."""
    total = 0.0
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds == seconds:  # not NaN
            total += seconds
    return total


def pids_named(*names: str) -> list[int]:
    """Every process on this machine whose command name is one of `names` (e.g. postgres, redis-server)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    floor = sub.add_parser("floor")
    floor.add_argument("port", type=int)
    for name in ("rate", "closed"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--file", type=Path, required=True)
        p.add_argument("--rate", type=float, default=1000)
        p.add_argument("--seconds", type=float, default=10)
        p.add_argument("--connections", type=int, default=64)
        p.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args(argv)
    if args.command == "floor":
        serve_floor(args.port)
        return 0
    with open(args.file, "rb") as f:
        pool = pickle.load(f)
    requests = encode_requests(pool, args.port)
    del pool
    if args.command == "rate":
        limit = args.seconds if args.seconds > 0 else len(requests) / args.rate + 15
        summary = asyncio.run(run_rate(args.port, requests, args.rate, args.connections, args.timeout, limit))
        summary["target_rate"] = args.rate
    else:
        summary = asyncio.run(run_closed(args.port, requests, args.seconds, args.connections, args.timeout))
    summary["generator_pid"] = os.getpid()
    print("BENCHJSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
