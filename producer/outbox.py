"""Enqueue exactly once: record the job under a deterministic id, then send it, then mark it sent."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from pymongo.database import Database

from eduranker.queue import make_celery, send_training_job
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs

log = logging.getLogger(__name__)


def job_id_for(watermark: datetime) -> str:
    """Same watermark → same id; the unique _id then makes a second enqueue impossible."""
    return "auto-" + watermark.strftime("%Y%m%dT%H%M%S.%fZ")


def send_with_retry(app: Celery, db: Database, job_id: str, *, max_wait_s: float | None = None) -> bool:
    """Send until the broker takes it (backoff up to 30 s). False only if `max_wait_s` ran out."""
    delay, started = 0.5, time.monotonic()
    while True:
        try:
            send_training_job(app, job_id)
            jobs.mark_sent(db, job_id)
            return True
        except (OperationalError, ConnectionError, OSError) as exc:
            if max_wait_s is not None and time.monotonic() - started + delay > max_wait_s:
                log.warning("broker unreachable; job %s stays recorded and unsent: %s", job_id, exc)
                return False
            log.warning("broker unreachable (%s); retrying job %s in %.1f s", exc, job_id, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def send_unsent(app: Celery, db: Database, *, max_wait_s: float | None = None) -> list[str]:
    """Jobs recorded but never sent (a crash between insert and send) are sent now."""
    sent = []
    for job in jobs.unsent_jobs(db):
        if send_with_retry(app, db, job["_id"], max_wait_s=max_wait_s):
            sent.append(job["_id"])
    return sent


def enqueue(app: Celery, db: Database, job_id: str, trigger: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Record then send. Returns False when the job already existed (nothing sent twice)."""
    if not jobs.create_job(db, job_id, trigger=trigger, overrides=overrides):
        log.info("job %s already recorded; not enqueued again", job_id)
        return False
    send_with_retry(app, db, job_id)
    return True


def request_training(reason: str = "manual", *, settings: Settings | None = None, **overrides: Any) -> str:
    """Record and send a training job by hand; returns its id. Goes through the same outbox."""
    settings = settings or Settings.from_env()
    db = connect(settings)
    ensure_indexes(db)
    app = make_celery(settings, "eduranker-producer")
    job_id = f"manual-{uuid.uuid4().hex[:12]}"
    enqueue(app, db, job_id, {"reason": reason, "source": "request_training"}, overrides)
    return job_id
