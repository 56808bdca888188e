"""Announcement settings, read from the environment like bot.config.Settings (same rules)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from bot.config import REPO_ROOT, Settings


class CampaignSettings(Settings):
    #: Folder of script templates, sale files and campaigns.yaml.
    scripts_dir: Path = Field(REPO_ROOT / "scripts", alias="SCRIPTS_DIR")
    #: Shared by all workers, per channel API: messages per second (0 = no limit).
    announce_rate_per_second: float = Field(20.0, alias="ANNOUNCE_RATE_PER_SECOND", ge=0)
    #: Recipients claimed and sent concurrently by one delivery job.
    announce_concurrency: int = Field(50, alias="ANNOUNCE_CONCURRENCY", ge=1, le=1000)
    #: Deliveries per fan-out job (each job is one arq job, resumable on its own).
    announce_shard_size: int = Field(2000, alias="ANNOUNCE_SHARD_SIZE", ge=1)
    #: Tries per delivery on 45009 / 5xx / network errors before it fails.
    announce_max_attempts: int = Field(5, alias="ANNOUNCE_MAX_ATTEMPTS", ge=1)
    #: First pause after a rate-limit answer, doubled each time (shared by all workers).
    announce_backoff_seconds: float = Field(1.0, alias="ANNOUNCE_BACKOFF_SECONDS", ge=0)
    #: arq timeout of one delivery job; a killed worker's job is retried after this + 10 s. A shard
    #: stops claiming at half of it and goes on in a new job, so shards of any size fit.
    announce_job_timeout_seconds: int = Field(60, alias="ANNOUNCE_JOB_TIMEOUT_SECONDS", ge=1)
    #: WeCom: how often the send results of add_msg_template tasks are read (get_groupmsg_send_result).
    announce_wecom_check_seconds: float = Field(300.0, alias="ANNOUNCE_WECOM_CHECK_SECONDS", gt=0)
    #: WeCom: a task not yet sent by its staff member this long after creation gets one reminder.
    announce_wecom_remind_seconds: float = Field(3600.0, alias="ANNOUNCE_WECOM_REMIND_SECONDS", ge=0)
    #: WeCom: recipients still unconfirmed this long after creation are failed and the run ends.
    announce_wecom_expire_seconds: float = Field(86400.0, alias="ANNOUNCE_WECOM_EXPIRE_SECONDS", gt=0)
