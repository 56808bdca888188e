"""Background jobs on arq: what must happen after a callback is answered, durably.

- `registry`: the modules whose arq functions (`FUNCTIONS`, optional `CRON_JOBS`) the worker runs.
- `runtime`: `JobRuntime`, what jobs use (`ctx["app"]`): settings, engine, store, HTTP session, senders.
- `queue`: `JobQueue` for the app (`AppContext.jobs`): arq on Redis, or in-process on the embedded default.
- `worker`: `python -m bot worker`.
"""
