"""The policy's view of `training_jobs`: the active job, the cooldown's start, the trigger window, and
the failed automatic job to retry. A handful of indexed reads."""

from __future__ import annotations

from datetime import datetime

from eduranker.records import JobDoc
from eduranker.store import challenge, jobs
from eduranker.store.types import Db
from producer.policy import FailedChain, JobHistory

FAILED_LIKE = [jobs.FAILED, jobs.CANCELLED]


def watermark_of(job: JobDoc | None) -> datetime | None:
    if job is None:
        return None
    return (job.get("snapshot") or {}).get("watermark") or (job.get("trigger") or {}).get("watermark")


def read_history(db: Db, retry_limit: int) -> JobHistory:
    active = jobs.active_job(db)
    newest = jobs.latest_job(db)
    settled = jobs.latest_job(db, {"status": {"$in": [jobs.SUCCEEDED, jobs.REJECTED]}})
    window = watermark_of(settled)
    failed = None
    newest_auto = jobs.latest_job(db, {"automatic": True, "status": {"$in": [*jobs.TERMINAL]}})
    if (
        newest_auto is not None
        and newest_auto["status"] in FAILED_LIKE
        and (settled is None or newest_auto["created_at"] > settled["created_at"])
    ):
        watermark = (newest_auto.get("trigger") or {}).get("watermark")
        if watermark is not None:
            failures = jobs.count_jobs(
                db, {"automatic": True, "status": {"$in": FAILED_LIKE}, "trigger.watermark": watermark}
            )
            failed_at = newest_auto.get("finished_at") or newest_auto["created_at"]
            failed = FailedChain(newest_auto["_id"], watermark, failures, failed_at)
            if failures > retry_limit:  # retries spent: that trigger is used up, wait for new feedback
                window = watermark if window is None else max(window, watermark)
    return JobHistory(
        active=(active["_id"], active["status"]) if active else None,
        last_created_at=newest["created_at"] if newest else None,
        window_since=window,
        failed=failed,
        waiting=oldest_waiting(db),
        waiting_automatic=jobs.next_waiting(db, automatic=True),
        active_automatic=bool(active and active.get("automatic")),
        challenger=running.version if (running := challenge.read(db)[1]) else None,
    )


def oldest_waiting(db: Db) -> str | None:
    """The manual job next in line for the slot."""
    return jobs.next_waiting(db, automatic=False)
