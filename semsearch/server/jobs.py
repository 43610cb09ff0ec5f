"""Long tasks (a dedupe of the whole index) run in a background thread, one at a time, and are polled.

``submit`` returns a :class:`Job` at once; ``GET /jobs/{id}`` shows its status (queued, running, done,
failed) and, when done, its result. The last ``keep`` jobs are remembered, in memory only.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..errors import SemsearchError

log = logging.getLogger("semsearch.server")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Job:
    id: str
    kind: str
    params: dict
    status: str = "queued"  # queued, running, done, failed
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    result: Any = None
    error: dict | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "status": self.status, "params": self.params,
                "created": self.created, "started": self.started, "finished": self.finished,
                "result": self.result, "error": self.error}


class Jobs:
    """A one-thread queue of jobs and the record of the last ``keep`` of them."""

    def __init__(self, keep: int = 100) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semsearch-job")

    def submit(self, kind: str, params: dict, run: Callable[[], Any]) -> Job:
        job = Job(secrets.token_hex(8), kind, params)
        with self._lock:
            self._jobs[job.id] = job
            finished = [key for key, j in self._jobs.items() if j.status in ("done", "failed")]
            for key in finished[:max(0, len(self._jobs) - self.keep)]:
                del self._jobs[key]
        self._pool.submit(self._run, job, run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, run: Callable[[], Any]) -> None:
        job.status, job.started = "running", _now()
        result, error = None, None
        try:
            result = run()
        except SemsearchError as exc:
            from .errors import api_error

            failure = api_error(exc)
            error = {"code": failure.code, "message": failure.message, "field": failure.field}
        except Exception as exc:
            log.error("job %s (%s) failed", job.id, job.kind, exc_info=exc)
            error = {"code": "internal", "message": f"internal error ({type(exc).__name__}); see the server's log",
                     "field": None}
        job.result, job.error, job.finished = result, error, _now()
        job.status = "failed" if error else "done"  # last: a poller that sees it finished sees the rest

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
