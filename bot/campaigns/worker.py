"""`arq bot.campaigns.worker.WorkerSettings`: a worker for the announcement jobs alone.

The shared worker (`python -m bot worker`, bot/jobs/) runs them with everything else once
bot/jobs/registry.py lists bot.campaigns.jobs; this stays for running them on their own.
"""

from __future__ import annotations

import uvloop

from bot.campaigns import jobs
from bot.campaigns.runtime import redis_settings, shutdown, startup


class WorkerSettings:
    functions = jobs.FUNCTIONS
    cron_jobs = jobs.CRON_JOBS
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings()
    max_jobs = 4
    #: announce_deliver's own timeout (ANNOUNCE_JOB_TIMEOUT_SECONDS) sets how soon a killed
    #: worker's shard is picked up again (+10 s, arq's in-progress lease).


# arq's CLI runs the worker on the default event loop policy; the bot runs on uvloop (bot/server.py).
uvloop.install()
