"""Whether a training run must stop now: asked before every step, it reads the job at most once a second.

A cancelled or superseded run must stop within one training step, not at its next stage. Fine-tuning
asks `StopCheck` before each step (`should_stop` in eduranker/pipeline/training.py, which knows
nothing of databases). Between reads the answer is two in-memory flags (the heartbeat's "taken over",
the worker's "shutting down"); once per `interval_s` of this process's monotonic time it reads the
job's record, so a long run costs the database one small read a second, and a run resumed after a
pause reads at once, before its next step. No torch here: `worker.job` imports this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.errors import PyMongoError

from eduranker.errors import EduRankerError, HandedBack, Superseded
from eduranker.store import jobs
from eduranker.store.types import Db
from worker.run import Run

log = logging.getLogger(__name__)

STOP_CHECK_INTERVAL_S = 1.0


class StoppedTraining(Superseded):
    """A run that lost its job (cancelled, taken over) stopped mid-training, after `step` of `total_steps`."""

    def __init__(self, job_id: str, attempt: int, step: int, total_steps: int, reason: str) -> None:
        super().__init__(f"job {job_id} attempt {attempt} stopped at training step {step}/{total_steps}: {reason}")
        self.step, self.total_steps, self.reason = step, total_steps, reason

    def as_record(self) -> dict[str, Any]:
        return {"stage": "train", "step": self.step, "total_steps": self.total_steps, "reason": self.reason}


def stop_reason(job: Mapping[str, Any] | None, attempt: int) -> str | None:
    """Why the run of `attempt` must stop, read from its job's record; None while it still owns the job."""
    if job is None:
        return "its job record is gone"
    status, attempts = job.get("status"), int(job.get("attempts") or 0)
    if status == jobs.CANCELLED:
        return f"cancelled ({job.get('reason')})"
    if attempts != attempt:
        return f"superseded: attempt {attempts} took the job over"
    if status != jobs.RUNNING:
        return f"the job is {status} now"
    return None


class StopCheck:
    """`should_stop` for fine-tuning: True once this run no longer owns its job or the worker is stopping."""

    def __init__(
        self, db: Db, run: Run, interval_s: float = STOP_CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db, self.run, self.interval_s, self.clock = db, run, interval_s, clock
        self.reason: str | None = None
        self.reads = 0
        self._last_read: float | None = None

    def __call__(self) -> bool:
        if self.reason is not None or self.run.superseded.is_set() or self.run.stop_requested.is_set():
            return True
        now = self.clock()
        if self._last_read is not None and now - self._last_read < self.interval_s:
            return False
        self._last_read = now
        return self._read() is not None

    def _read(self) -> str | None:
        try:
            self.reads += 1
            self.reason = stop_reason(jobs.get_job(self.db, self.run.job_id), self.run.attempt)
        except PyMongoError:  # unreachable for now: train on, the heartbeat keeps the job owned
            log.warning("job %s: could not check whether this run still owns it", self.run.job_id, exc_info=True)
            return None
        if self.reason is not None:
            self.run.superseded.set()  # every later progress call and fenced write stops too
        return self.reason

    def stopped(self, step: int, total_steps: int) -> EduRankerError:
        """What a run that stopped mid-training raises: HandedBack at a worker's shutdown, else
        StoppedTraining with how far it got and why (read now if the heartbeat noticed first)."""
        if self.run.stop_requested.is_set() and not self.run.superseded.is_set():
            return HandedBack(f"job {self.run.job_id}: worker shutting down")
        if self.reason is None:
            self._read()
        reason = self.reason or "superseded: the job's record no longer names this run"
        return StoppedTraining(self.run.job_id, self.run.attempt, step, total_steps, reason)


def record_stop(db: Db, job_id: str, attempt: int, exc: Superseded) -> dict[str, Any]:
    """The fields a stopped run returns; on a job cancelled under it, also noted on the record (no other
    run owns a cancelled job). A job taken over belongs to its successor: nothing is written to it."""
    if not isinstance(exc, StoppedTraining):
        return {}
    stopped = exc.as_record()
    try:
        jobs.note_stopped_run(db, job_id, attempt, stopped)
    except PyMongoError:  # a note for the operator: the job is over either way
        log.warning("job %s: where its run stopped was not recorded", job_id, exc_info=True)
    return {"stopped": stopped}
