"""A job's lifecycle around the pipeline: claim it, run it fenced, and record how it ended.

Every way out leaves the job in a state something acts on: finished (succeeded, rejected, failed),
handed back to the queue (the worker is stopping, or a server was unreachable), or untouched because
another attempt owns it now. `run_training_job` is a plain function; the Celery task wraps it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from eduranker.errors import (
    HandedBack,
    JobBusy,
    JobNotFound,
    PermanentError,
    RetryableError,
    Superseded,
)
from eduranker.indexes import DEFAULT
from eduranker.overrides import FIELDS, OverrideRefused, checked_overrides
from eduranker.records import JobDoc
from eduranker.settings import Settings, SettingsError
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors
from eduranker.store.connection import patiently
from eduranker.store.types import Db
from worker.run import WRITE_PATIENCE_S, ProgressHook, Run
from worker.stop_check import record_stop

log = logging.getLogger(__name__)
T = TypeVar("T")

OVERRIDABLE = FIELDS


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    # Typed and ranged before anything loads (eduranker/overrides.py): the task's sender is not trusted.
    try:
        mapped = checked_overrides(settings, overrides)
    except OverrideRefused as exc:
        raise PermanentError(str(exc)) from None
    try:
        return settings.with_overrides(**mapped)
    except SettingsError as exc:
        raise PermanentError(f"invalid job override: {exc}") from None


def claim(db: Db, settings: Settings, job_id: str, worker_name: str) -> JobDoc | None:
    """The claimed job, or None when there is nothing to do (it ended already)."""
    with retryable_on_mongo_errors():
        ensure_indexes(db)
        job = jobs.claim_job(db, job_id, worker=worker_name, stale_after_s=settings.job_stale_after_s)
        if job is not None:
            return job
        existing = jobs.get_job(db, job_id)
    if existing is None:
        raise JobNotFound(f"no training job {job_id!r}")
    if existing["status"] == jobs.RUNNING:
        # A redelivery while the last run's heartbeat is fresh: that run may still be alive (or its
        # worker died a moment ago). Come back once it is over or has gone silent.
        raise JobBusy(
            f"job {job_id} is running on {existing.get('worker')}; retrying once it ends or goes silent",
            retry_after_s=settings.job_stale_after_s,
        )
    log.info("job %s is %s; nothing to do", job_id, existing["status"])
    return None


def run_training_job(
    settings: Settings,
    job_id: str,
    *,
    worker_name: str = "local",
    on_progress: ProgressHook | None = None,
    db: Db | None = None,
    stop_requested: threading.Event | None = None,
) -> dict[str, Any]:
    """Run (or take over after a crash) the job `job_id`; returns a summary of its outcome."""
    db = db if db is not None else connect(settings)
    job = claim(db, settings, job_id, worker_name)
    if job is None:
        return outcome(jobs.get_job(db, job_id) or {"_id": job_id}, settings.index)
    attempt = job["attempts"]
    if jobs.runs_died(job) > jobs.MAX_ATTEMPTS:
        reason = f"gave up after {jobs.MAX_ATTEMPTS} attempts (the worker died each time)"
        jobs.finish_job(db, job_id, attempt, jobs.FAILED, reason=reason)
        raise PermanentError(reason)

    run = Run(db, job_id, attempt, settings.job_heartbeat_seconds, on_progress)
    if stop_requested is not None:
        run.stop_requested = stop_requested
    try:
        effective = apply_overrides(settings, job.get("overrides") or {})
        from worker.steps import train_and_register  # torch lives behind this import

        with run, retryable_on_mongo_errors():
            result = train_and_register(db, effective, run)
        status = result.pop("job_status")
        _record(lambda: jobs.finish_job(db, job_id, attempt, status, **result), "recording the outcome")
    except Superseded as exc:
        # Cancelled or taken over: the task (worker/tasks.py) reads which and logs it in those words.
        log.warning("job %s attempt %d no longer owns its job; stopping without writing: %s", job_id, attempt, exc)
        return {"job_id": job_id, "status": "superseded", "attempt": attempt, **record_stop(db, job_id, attempt, exc)}
    except HandedBack:
        _record(lambda: jobs.hand_back(db, job_id, attempt, "worker stopped; handed back"), "handing the job back")
        log.warning("job %s handed back to the queue: the worker is stopping", job_id)
        return {"job_id": job_id, "status": "handed_back", "attempt": attempt}
    except RetryableError as exc:
        why = f"will retry: {exc}"
        cap = settings.job_max_handbacks
        status = _record(lambda: jobs.hand_back(db, job_id, attempt, why, max_handbacks=cap), "handing the job back")
        if status == jobs.FAILED:  # the same "retryable" error every time: it is not going away by itself
            log.error("job %s failed: handed back %d times, last: %s", job_id, cap, exc)
            raise PermanentError(f"handed back {cap} times (JOB_MAX_HANDBACKS); last: {exc}") from exc
        raise
    except Exception as exc:
        reason = str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"
        _record(lambda: jobs.finish_job(db, job_id, attempt, jobs.FAILED, reason=reason), "recording the failure")
        raise
    return outcome(jobs.get_job(db, job_id) or {"_id": job_id}, settings.index)


def _record(write: Callable[[], T], what: str) -> T | None:
    """A last write of the run: patient with an unreachable database; if it never comes back in time,
    the producer requeues the silent job. A run taken over meanwhile writes nothing."""
    try:
        return patiently(write, patience_s=WRITE_PATIENCE_S, what=what)
    except Superseded as exc:
        log.warning("%s", exc)
    except RetryableError:
        log.exception("could not finish %s; the producer requeues the job once its heartbeat is stale", what)
    return None


def outcome(job: JobDoc, index: str = DEFAULT) -> dict[str, Any]:
    """The task's result. `outcome` comes first: it is what Flower's task list shows of it, so a promotion,
    a rejection by the gate and a failure read differently at a glance; `index` says whose job it was."""
    return {
        "outcome": jobs.headline(job),
        "job_id": job.get("_id"),
        "index": index,
        "status": job.get("status", "unknown"),
        "version": job.get("version"),
        "promoted": job.get("promoted", False),
        "challenger": job.get("challenger", False),
        "reason": job.get("reason"),
        "gate_reason": job.get("gate_reason"),
        "metrics": job.get("metrics"),
    }
