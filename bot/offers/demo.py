"""The demo's offers: what `make run` needs for 新人 to give a real code and 入群 a real QR."""

from __future__ import annotations

from pathlib import Path

import segno
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import REPO_ROOT
from bot.offers import repository

DEMO_BATCH = "new_customer"
DEMO_POOL = "fuli"
DEMO_QR_DIR = REPO_ROOT / "var" / "demo"


async def seed_demo(sessions: async_sessionmaker[AsyncSession], qr_dir: Path = DEMO_QR_DIR) -> list[str]:
    """Create, only where missing, the demo batch and the demo pool; say what was done."""
    done: list[str] = []
    async with sessions() as session:
        if await repository.batch_named(session, DEMO_BATCH) is None:
            await repository.create_batch(
                session, name=DEMO_BATCH, title="新人券 满99减20", stock=1000, per_customer=1, valid_days=30
            )
            done.append(f"created coupon batch {DEMO_BATCH} (stock 1000, 1 per customer, 30 days)")
        else:
            done.append(f"coupon batch {DEMO_BATCH} exists")
        if await repository.pool_named(session, DEMO_POOL) is None:
            pool = await repository.create_pool(session, name=DEMO_POOL, title="棉棉小屋宝妈福利群", warn_below=20)
            qr = demo_qr(qr_dir, "fuli-1")
            await repository.add_group(session, pool, name="宝妈福利1群", capacity=200, qr_path=str(qr))
            done.append(f"created group pool {DEMO_POOL} with one group (demo QR: {qr})")
        else:
            done.append(f"group pool {DEMO_POOL} exists")
        await session.commit()
    return done


def demo_qr(folder: Path, name: str) -> Path:
    """A QR PNG that says what it is: a stand-in for the real group's QR."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    segno.make(f"棉棉小屋宝妈福利群（演示二维码）：换成真实群二维码 python -m bot group pool add {DEMO_POOL} 群名 --qr 文件.png",
               error="m").save(str(path), scale=6, border=2)
    return path
