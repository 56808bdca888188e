"""Settings from the environment. Names are a public contract (README, compose, other tools)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Printed at start and accepted when WECHAT_OA_TOKEN is unset: lets a newcomer sign
#: plain-mode callbacks with no configuration. Never used when a token is configured.
DEVELOPMENT_TOKEN = "siyu-dev-token"


class Settings(BaseModel):
    """Each field is read from the environment variable named by its alias (case-insensitive);
    keyword arguments, by variable or field name, override the environment.

    What pydantic-settings' BaseSettings did for these plain fields, without importing it
    (~40 ms of every start with python-dotenv and its secret-manager sources).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, validate_default=True)

    bot_host: str = Field("0.0.0.0", alias="BOT_HOST")
    bot_port: int = Field(8080, alias="BOT_PORT")
    #: Serving processes on BOT_PORT (SO_REUSEPORT): a number, or "auto" for one per core.
    bot_workers: str = Field("1", alias="BOT_WORKERS")
    database_url: str = Field(f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'siyu.sqlite3'}", alias="DATABASE_URL")
    #: Unset → the in-process store (single process only).
    redis_url: str | None = Field(None, alias="REDIS_URL")
    persona: Path = Field(REPO_ROOT / "persona" / "demo", alias="PERSONA")
    #: Other personas by channel: "wecom=persona/demo_wecom,wechat_oa=persona/demo".
    persona_by_channel: str = Field("", alias="PERSONA_BY_CHANNEL")
    persona_history_dir: Path = Field(REPO_ROOT / "var" / "persona-history", alias="PERSONA_HISTORY_DIR")

    wechat_oa_token: str | None = Field(None, alias="WECHAT_OA_TOKEN")
    wechat_oa_appid: str = Field("", alias="WECHAT_OA_APPID")
    wechat_oa_secret: str = Field("", alias="WECHAT_OA_SECRET")
    #: Unset → plain mode accepted; set → safe (AES) and compatible modes.
    wechat_oa_aes_key: str | None = Field(None, alias="WECHAT_OA_AES_KEY")
    wechat_api_base: str = Field("https://api.weixin.qq.com", alias="WECHAT_API_BASE")

    #: Passive replies must be answered within WeChat's 5 s; past this we ack `success` and push later.
    reply_deadline_seconds: float = Field(4.0, alias="REPLY_DEADLINE_SECONDS")
    #: Accepted clock skew for callback timestamps.
    timestamp_tolerance_seconds: int = Field(300, alias="TIMESTAMP_TOLERANCE_SECONDS")
    max_body_bytes: int = Field(1024 * 1024, alias="MAX_BODY_BYTES")
    #: OA openids treated as staff (comma-separated), for chat commands.
    staff_openids: str = Field("", alias="STAFF_OPENIDS")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    #: "json" (default) or "text".
    log_format: str = Field("json", alias="LOG_FORMAT")

    def __init__(self, **values: Any) -> None:
        fields = type(self).model_fields
        aliases = {name: field.alias or name for name, field in fields.items()}
        environ = {key.upper(): value for key, value in os.environ.items()}
        merged = {alias: environ[alias.upper()] for alias in aliases.values() if alias.upper() in environ}
        merged.update({aliases.get(key, key): value for key, value in values.items()})
        super().__init__(**merged)

    @property
    def oa_token(self) -> str:
        return self.wechat_oa_token or DEVELOPMENT_TOKEN

    @property
    def worker_count(self) -> int:
        from bot.workers import resolve_worker_count

        return resolve_worker_count(self.bot_workers)

    @property
    def uses_development_token(self) -> bool:
        return not self.wechat_oa_token

    def personas_by_channel(self) -> dict[str, Path]:
        mapping: dict[str, Path] = {}
        for item in filter(None, (part.strip() for part in self.persona_by_channel.split(","))):
            channel, _, path = item.partition("=")
            if not path:
                raise ValueError(f"PERSONA_BY_CHANNEL entry {item!r} must look like channel=path")
            mapping[channel.strip()] = _resolve(Path(path.strip()))
        return mapping

    def staff(self) -> frozenset[str]:
        return frozenset(filter(None, (part.strip() for part in self.staff_openids.split(","))))


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else (Path.cwd() / path)
