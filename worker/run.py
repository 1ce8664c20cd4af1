"""One run of a job: the attempt that owns it, its heartbeat, its progress, and its fenced writes.

A run owns its job through the attempt number its claim set. Every write is conditioned on that
attempt; once another attempt has taken the job over (or an operator cancelled it), the heartbeat
notices, the next progress call raises Superseded, and the run stops having changed nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pymongo.errors import PyMongoError

from eduranker.errors import HandedBack, Superseded
from eduranker.store import jobs
from eduranker.store.connection import patiently
from eduranker.store.types import Db

log = logging.getLogger(__name__)

ProgressHook = Callable[[dict[str, Any]], None]  # e.g. Celery's update_state
PROGRESS_INTERVAL_S = 1.0
WRITE_PATIENCE_S = 120.0  # how long a run waits for an unreachable database before giving the job back


class Run:
    def __init__(self, db: Db, job_id: str, attempt: int, heartbeat_s: float, on_progress: ProgressHook | None):
        self.db, self.job_id, self.attempt = db, job_id, attempt
        self.heartbeat_s = heartbeat_s
        self.on_progress = on_progress
        self.superseded = threading.Event()
        self.stop_requested = threading.Event()  # set by the worker's shutdown signal
        self._stop_beats = threading.Event()
        self._beater = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)
        self._last_progress = 0.0

    def __enter__(self) -> Run:
        self._beater.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop_beats.set()
        self._beater.join()

    def _beat(self) -> None:
        """Beat while the job runs, also through stages that report nothing (snapshot, scoring)."""
        while not self._stop_beats.wait(self.heartbeat_s):
            try:
                if not jobs.heartbeat(self.db, self.job_id, self.attempt):
                    log.warning("job %s attempt %d no longer owns the job; stopping", self.job_id, self.attempt)
                    self.superseded.set()
                    return
            except PyMongoError:  # unreachable for now: the next beat tries again
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def check(self) -> None:
        """Raise if this run must stop: taken over, or the worker is shutting down."""
        if self.superseded.is_set():
            raise Superseded(f"job {self.job_id} attempt {self.attempt} was taken over")
        if self.stop_requested.is_set():
            raise HandedBack(f"job {self.job_id}: worker shutting down")

    def update(self, what: str, **fields: Any) -> None:
        """A write the job's record needs (snapshot, split, device): fenced, and patient with the database."""
        self.check()
        patiently(lambda: jobs.update_job(self.db, self.job_id, self.attempt, **fields), patience_s=WRITE_PATIENCE_S,
                  what=what)  # fmt: skip

    def progress(self, stage: str, *, force: bool = True, **details: Any) -> None:
        """Report progress (Flower and the job's record). Best effort: training goes on while the
        database is unreachable, and the heartbeat keeps the job owned."""
        self.check()
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        progress = {"job_id": self.job_id, "stage": stage, **details}
        if self.on_progress is not None:
            try:
                self.on_progress(progress)
            except Exception:  # the result backend is for display only
                log.warning("progress not published for job %s", self.job_id, exc_info=True)
        try:
            jobs.update_job(self.db, self.job_id, self.attempt, progress=progress)
        except Superseded:
            self.superseded.set()
            raise
        except PyMongoError:
            log.warning("progress of job %s not recorded (database unreachable)", self.job_id)
