"""Enqueue exactly once: record the job under a deterministic id, then send it, then mark it sent."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from celery import Celery

from eduranker.errors import Refused
from eduranker.indexes import DEFAULT, DEFAULT_INDEX, Index
from eduranker.overrides import OverrideRefused, checked_overrides
from eduranker.queue import announce_waiting, make_celery, send_unsent, send_with_retry
from eduranker.records import TriggerDoc
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs
from eduranker.store.types import Db

log = logging.getLogger(__name__)

__all__ = ["enqueue", "job_id_for", "request_training", "send_unsent"]


def job_id_for(watermark: datetime, retry: int = 0, index: Index = DEFAULT_INDEX) -> str:
    """Same watermark → same id; the unique _id then makes a second enqueue impossible."""
    return index.named("auto-" + watermark.strftime("%Y%m%dT%H%M%S.%fZ") + (f"-retry{retry}" if retry else ""))


def enqueue(
    app: Celery,
    db: Db,
    job_id: str,
    trigger: TriggerDoc,
    overrides: dict[str, Any],
    *,
    automatic: bool = False,
    max_wait_s: float | None = None,
    max_waiting: int | None = None,
) -> str | None:
    """Record then send. Returns the job's status (`queued`, or `waiting` behind an active job), or None
    when nothing was recorded (the id exists, or an automatic job met an active one). `max_wait_s`
    bounds the sending (a leader must not outwait its lease): unsent, the outbox's next pass sends it.
    `max_waiting`: the cap on waiting manual jobs (QueueFull beyond it)."""
    status = jobs.create_job(db, job_id, trigger=trigger, overrides=overrides, automatic=automatic,
                             max_waiting=max_waiting)  # fmt: skip
    if status is None:
        log.info("job %s not recorded: it exists already or another job is active", job_id)
    elif status == jobs.QUEUED:
        send_with_retry(app, db, job_id, max_wait_s=max_wait_s)
    return status


def request_training(reason: str = "manual", *, settings: Settings | None = None, **overrides: Any) -> str:
    """Record and send a training job by hand; returns its id. Goes through the same outbox; behind an
    active job it waits, and is sent when that job ends."""
    settings = settings or Settings.from_env().for_index(DEFAULT)
    try:  # checked when recorded, not only when a worker claims it: a refusal records nothing
        checked_overrides(settings, {**overrides, "reason": reason})
    except OverrideRefused as exc:
        raise Refused(str(exc)) from None
    db = connect(settings)
    ensure_indexes(db)
    app = make_celery(settings, "eduranker-producer")
    job_id = settings.index_spec.named(f"manual-{uuid.uuid4().hex[:12]}")
    trigger: TriggerDoc = {"reason": reason, "source": "request_training"}
    if enqueue(app, db, job_id, trigger, overrides, max_waiting=settings.max_waiting_jobs) == jobs.WAITING:
        active = jobs.active_job(db)
        announce_waiting(app, job_id, active["_id"] if active else None)
    return job_id
