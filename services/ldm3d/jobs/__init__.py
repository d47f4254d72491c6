"""Durable jobs: long renders and generations that survive lost workers and restarted front servers.

    redis-server (scripts/redis.sh starts one on loopback for development)
    ldm3d serve all --port 50051 --repository R --queue redis://127.0.0.1:6379/0      # takes jobs, answers them
    ldm3d worker --queue redis://127.0.0.1:6379/0 --repository R [--kinds render,generate] [--concurrency N]

Three parts, each in its own module:

* :mod:`.store`: the operation records in Redis (state, progress, result or error, artifacts), so any front
  replica answers ``GetOperation``/``CancelOperation`` for any job, also after a restart; a lease per running job
  and a Redis-side completion guard (one Lua script) so a job is never completed twice.
* :mod:`.broker`: the queue itself is **Dramatiq**'s Redis broker (ack after success; a worker's fetched-but-unacked
  messages go back to the queue when its heartbeats stop), tuned so a killed worker's job runs again within 60 s.
* :mod:`.front` (what ``serve --queue`` uses: submit, get, cancel) and :mod:`.worker` (``ldm3d worker``: runs
  render and generation jobs with the same code as the in-process path; renders checkpoint every finished frame in
  the shared ``--render-output-dir`` and resume from them; SIGTERM finishes the current frame and hands the rest
  back).

Why Dramatiq, the alternatives and the numbers: ``docs/jobs.md``.
"""

KINDS = ("render", "generate")
