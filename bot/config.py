"""Settings from the environment. Names are a public contract (README, compose, other tools)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Printed at start and accepted when WECHAT_OA_TOKEN is unset: lets a newcomer sign
#: plain-mode callbacks with no configuration. Never used when a token is configured.
DEVELOPMENT_TOKEN = "siyu-dev-token"


class UnsafeConfiguration(Exception):
    """The settings would serve forgeable callbacks in production; the messages say what to set."""

    def __init__(self, refusals: list[str]) -> None:
        super().__init__("; ".join(refusals))
        self.refusals = refusals


class Settings(BaseModel):
    """Each field is read from the environment variable named by its alias (case-insensitive);
    keyword arguments, by variable or field name, override the environment.

    What pydantic-settings' BaseSettings did for these plain fields, without importing it
    (~40 ms of every start with python-dotenv and its secret-manager sources).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, validate_default=True)

    #: "production" (the default: a real token is required) or "development" (what `make run` sets:
    #: the published development token is accepted, and only on 127.0.0.1).
    bot_env: Literal["production", "development"] = Field("production", alias="BOT_ENV")
    #: Unset → 0.0.0.0 in production; development always listens on 127.0.0.1 (see `listen_host`).
    bot_host: str | None = Field(None, alias="BOT_HOST")
    bot_port: int = Field(8080, alias="BOT_PORT")
    #: /metrics and /readyz (and /healthz) for operators, on this port only: never publish it.
    #: 0 picks a free port (tests). Listens on the same address as BOT_PORT.
    bot_ops_port: int = Field(9090, alias="BOT_OPS_PORT")
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
    #: Production refuses plain-mode callbacks (the URL signature does not cover the body) unless
    #: this is set; then a nonce replay cache guards them.
    wechat_oa_allow_plain: bool = Field(False, alias="WECHAT_OA_ALLOW_PLAIN")
    wechat_api_base: str = Field("https://api.weixin.qq.com", alias="WECHAT_API_BASE")

    # WeCom (企业微信): the self-built app's callback (`/wechat/work`) and the customer-contact API.
    wecom_corp_id: str = Field("", alias="WECOM_CORP_ID")
    wecom_token: str = Field("", alias="WECOM_TOKEN")
    wecom_aes_key: str = Field("", alias="WECOM_AES_KEY")
    #: The customer-contact (客户联系) secret; its token also sends the app's messages.
    wecom_secret: str = Field("", alias="WECOM_SECRET")
    wecom_agent_id: int | None = Field(None, alias="WECOM_AGENT_ID")
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com", alias="WECOM_API_BASE")
    #: Coupon batch / group pool of the WeCom welcome when the customer came through no channel of ours.
    wecom_welcome_coupon: str = Field("", alias="WECOM_WELCOME_COUPON")
    wecom_welcome_pool: str = Field("", alias="WECOM_WELCOME_POOL")
    #: Corp tag group our own tags are created under on WeCom.
    wecom_tag_group: str = Field("思语", alias="WECOM_TAG_GROUP")

    #: WeCom intelligent bot (智能机器人, API mode) at /wechat/aibot: its callback Token and EncodingAESKey.
    wecom_aibot_token: str = Field("", alias="WECOM_AIBOT_TOKEN")
    wecom_aibot_aes_key: str = Field("", alias="WECOM_AIBOT_AES_KEY")
    #: The bot's display name in groups ("@<name>" addresses it); empty: a leading @-mention does.
    wecom_aibot_name: str = Field("", alias="WECOM_AIBOT_NAME")
    #: Later replies go to the message's response_url, only when it starts with this.
    wecom_aibot_response_base: str = Field("https://qyapi.weixin.qq.com/", alias="WECOM_AIBOT_RESPONSE_BASE")
    #: Group chats: at most this many bot replies per group per minute; the excess is dropped and counted.
    group_replies_per_minute: int = Field(20, ge=1, alias="GROUP_REPLIES_PER_MINUTE")
    #: Group chats: no bot replies in these hours (China time), e.g. "23:00-07:00"; empty: none.
    group_quiet_hours: str = Field("", alias="GROUP_QUIET_HOURS")

    #: Passive replies must be answered within WeChat's 5 s; past this we ack `success` and push later.
    reply_deadline_seconds: float = Field(4.0, alias="REPLY_DEADLINE_SECONDS")
    #: arq timeout of background jobs (pushes, late answers). A job of a worker that died is picked
    #: up by another worker once arq's lease runs out: the longest job timeout (this one or
    #: ANNOUNCE_JOB_TIMEOUT_SECONDS) + 10 s after it started.
    job_timeout_seconds: int = Field(60, alias="JOB_TIMEOUT_SECONDS", ge=5, le=3600)
    #: Accepted clock skew for callback timestamps.
    timestamp_tolerance_seconds: int = Field(300, alias="TIMESTAMP_TOLERANCE_SECONDS")
    #: WeChat callbacks are a few KB (a text message is at most 2,048 characters); 64 KB leaves room.
    max_body_bytes: int = Field(64 * 1024, alias="MAX_BODY_BYTES")
    #: OA openids treated as staff (comma-separated), for chat commands.
    staff_openids: str = Field("", alias="STAFF_OPENIDS")
    #: Shared with the shop for /api/coupons (HMAC-SHA256); unset → those endpoints answer 503.
    shop_webhook_secret: str | None = Field(None, alias="SHOP_WEBHOOK_SECRET")
    #: Staff roles file; unset → persona/<p>/staff.yaml, else a top-level staff.yaml (bot/chatops/roles.py).
    staff_file: Path | None = Field(None, alias="STAFF_FILE")
    #: How long a bulk command's proposal waits for 确认 / 取消.
    chatops_proposal_ttl_seconds: float = Field(300.0, gt=0, alias="CHATOPS_PROPOSAL_TTL_SECONDS")
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
        return not self.wechat_oa_token or self.wechat_oa_token == DEVELOPMENT_TOKEN

    @property
    def development(self) -> bool:
        return self.bot_env == "development"

    @property
    def listen_host(self) -> str:
        """Development never listens beyond this machine: its token is public."""
        if self.development:
            return "127.0.0.1"
        return self.bot_host or "0.0.0.0"

    @property
    def plain_mode_allowed(self) -> bool:
        return self.development or self.wechat_oa_allow_plain

    def startup_refusals(self) -> list[str]:
        """Why this configuration must not serve (empty when it may). Checked before anything starts."""
        if self.development:
            return []
        refusals = []
        if self.uses_development_token:
            refusals.append(
                "WECHAT_OA_TOKEN is not set (or is the published development token): in production anyone could "
                "forge callbacks. Set WECHAT_OA_TOKEN to the Official Account's Token, or BOT_ENV=development "
                "to try the bot locally (what `make run` does)."
            )
        if not self.wechat_oa_aes_key and not self.wechat_oa_allow_plain:
            refusals.append(
                "WECHAT_OA_AES_KEY is not set: production refuses plain mode, whose signature does not cover the "
                "message body. Set WECHAT_OA_AES_KEY (safe mode, recommended), or WECHAT_OA_ALLOW_PLAIN=1 to accept "
                "plain callbacks (a nonce replay cache then guards them)."
            )
        return refusals

    def personas_by_channel(self) -> dict[str, Path]:
        mapping: dict[str, Path] = {}
        for item in filter(None, (part.strip() for part in self.persona_by_channel.split(","))):
            channel, _, path = item.partition("=")
            if not path:
                raise ValueError(f"PERSONA_BY_CHANNEL entry {item!r} must look like channel=path")
            mapping[channel.strip()] = _resolve(Path(path.strip()))
        return mapping

    @property
    def wecom_callback_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_token and self.wecom_aes_key)

    @property
    def wecom_api_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_secret)

    @property
    def wecom_aibot_configured(self) -> bool:
        return bool(self.wecom_aibot_token and self.wecom_aibot_aes_key)

    def staff(self) -> frozenset[str]:
        return frozenset(filter(None, (part.strip() for part in self.staff_openids.split(","))))


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else (Path.cwd() / path)
