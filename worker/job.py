"""One training job from start to finish: snapshot → split → evaluate → fine-tune → evaluate → gate.

`run_training_job` is a plain function: the Celery task is a thin wrapper around it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from eduranker.errors import JobBusy, JobNotFound, JobRefused, PermanentError, RetryableError
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors
from eduranker.store.snapshot import iter_feedback_rows
from worker import artifacts
from worker.pairs import Snapshot, build_snapshot

log = logging.getLogger(__name__)

Reporter = Callable[..., None]  # reporter(stage, **details)
MAX_ATTEMPTS = 3
OVERRIDABLE = {
    "num_epochs": "num_epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "head_learning_rate": "head_learning_rate",
    "base_model": "base_model_name",
    "max_length": "max_length",
    "warm_start": "warm_start",
    "seed": "seed",
}


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    unknown = set(overrides) - set(OVERRIDABLE) - {"reason"}
    if unknown:
        raise PermanentError(f"unknown job overrides: {', '.join(sorted(unknown))}")
    mapped = {OVERRIDABLE[k]: v for k, v in overrides.items() if k in OVERRIDABLE and v is not None}
    for name in ("num_epochs", "batch_size", "max_length"):
        if name in mapped and (not isinstance(mapped[name], int) or mapped[name] < 1):
            raise PermanentError(f"{name} must be a positive integer, got {mapped[name]!r}")
    return settings.with_overrides(**mapped)


def check_trainable(snapshot: Snapshot, min_feedback: int) -> None:
    """Refuse, with a reason a person understands, data that cannot give a meaningful model."""
    n = len(snapshot.pairs)
    counts = snapshot.label_counts
    if n < min_feedback:
        raise JobRefused(f"not enough feedback: {n} usable pairs, need {min_feedback}")
    if counts["like"] == 0 or counts["dislike"] == 0:
        only = "like" if counts["like"] else "dislike"
        raise JobRefused(f"only one class: all {n} usable pairs are '{only}'; need both likes and dislikes")


def run_training_job(
    settings: Settings,
    job_id: str,
    *,
    worker_name: str = "local",
    report: Reporter | None = None,
    db=None,
) -> dict[str, Any]:
    """Run (or resume after a crash) the job `job_id`; returns a summary of its outcome."""
    report = report or (lambda stage, **details: None)
    with retryable_on_mongo_errors():
        db = db if db is not None else connect(settings)
        ensure_indexes(db)
        job = jobs.claim_job(db, job_id, worker=worker_name, stale_after_s=settings.job_stale_after_s)
        if job is None:
            existing = jobs.get_job(db, job_id)
            if existing is None:
                raise JobNotFound(f"no training job {job_id!r}")
            if existing["status"] == jobs.RUNNING:
                # A redelivery while the last run's heartbeat is fresh: that run may still be alive (or
                # its worker died a moment ago). Come back once it is over or has gone silent.
                raise JobBusy(
                    f"job {job_id} is running on {existing.get('worker')}; retrying once it ends or goes silent",
                    retry_after_s=settings.job_stale_after_s,
                )
            log.info("job %s already %s; nothing to do", job_id, existing["status"])
            return _outcome(existing)
    if job["attempts"] > MAX_ATTEMPTS:
        reason = f"gave up after {MAX_ATTEMPTS} attempts (the worker died each time)"
        jobs.finish_job(db, job_id, jobs.FAILED, reason=reason)
        raise PermanentError(reason)

    try:
        effective = apply_overrides(settings, job.get("overrides") or {})
        from worker.candidate import train_and_register  # torch lives behind this import

        with retryable_on_mongo_errors(), heartbeats(db, job_id, settings.job_heartbeat_seconds):
            result = train_and_register(db, effective, job_id, report=report)
        jobs.finish_job(db, job_id, result.pop("job_status"), **result)
        return _outcome(jobs.get_job(db, job_id))
    except RetryableError as exc:
        jobs.update_job(db, job_id, status=jobs.QUEUED, reason=f"will retry: {exc}")
        raise
    except PermanentError as exc:
        jobs.finish_job(db, job_id, jobs.FAILED, reason=str(exc))
        raise
    except Exception as exc:
        jobs.finish_job(db, job_id, jobs.FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise


@contextlib.contextmanager
def heartbeats(db, job_id: str, every_s: float) -> Iterator[None]:
    """Beat while the job runs, also through long stages that report no progress (snapshot, scoring)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                jobs.heartbeat(db, job_id)
            except Exception:  # a missed beat is retried at the next one
                log.warning("heartbeat for job %s failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def take_snapshot(db, settings: Settings, job_id: str) -> Snapshot:
    started = time.perf_counter()
    snapshot = build_snapshot(iter_feedback_rows(db, settings.max_text_chars), settings.max_text_chars)
    summary = snapshot.summary()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    jobs.update_job(db, job_id, snapshot=summary)
    log.info("job %s snapshot: %s", job_id, {k: summary[k] for k in ("pairs", "label_counts", "skipped")})
    return snapshot


def _outcome(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job["_id"],
        "status": job["status"],
        "version": job.get("version"),
        "promoted": job.get("promoted", False),
        "reason": job.get("reason"),
        "metrics": job.get("metrics"),
    }


def champion_path(settings: Settings, champion: dict[str, Any] | None) -> str | None:
    if champion is None:
        return None
    return str(artifacts.version_dir(settings.models_dir, champion["version"]))
