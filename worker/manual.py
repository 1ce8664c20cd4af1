"""`train_reranker.delay(...)` records its job before it returns, under the task's id.

The task's base class: `apply_async` without a `job_id` (a person in a Python shell) records a manual job
first, so `eduranker status`, `watch` and Flower see it at once, then sends it, or, behind an active job,
leaves it `waiting` and unsent: the run that frees the slot (or the producer's outbox, whichever comes
first) moves it in and sends it under the same id, and the run that ends it writes the result `r.get()`
returns. Its overrides are checked when it is recorded, and at most MAX_WAITING_JOBS wait: a bad
override or a full queue raises `Refused` from `delay()`, nothing recorded. Calls that carry a `job_id`
(the outbox, a retry) are sent as they are.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from eduranker.errors import Refused
from eduranker.indexes import DEFAULT, DEFAULT_INDEX, Index
from eduranker.overrides import OverrideRefused, checked_overrides
from eduranker.queue import announce_waiting
from eduranker.records import TriggerDoc
from eduranker.settings import Settings, process_settings
from eduranker.store import connect, ensure_indexes, jobs
from eduranker.store.types import Db

log = logging.getLogger(__name__)

WAITING_STATE = "WAITING"  # a custom Celery state: not ready, so `r.get()` goes on waiting


def new_manual_id(index: Index = DEFAULT_INDEX) -> str:
    return index.named(f"manual-{uuid.uuid4().hex[:12]}")


def record_manual_job(db: Db, job_id: str, overrides: dict[str, Any], source: str, *, settings: Settings) -> str | None:
    """Record a manual job: `queued` in a free slot, `waiting` behind an active job, None if the id exists.
    Refused (nothing recorded) for an override a job would refuse, or when MAX_WAITING_JOBS wait."""
    try:
        checked_overrides(settings, overrides)
    except OverrideRefused as exc:
        raise Refused(str(exc)) from None
    trigger: TriggerDoc = {"reason": str(overrides.get("reason") or "manual"), "source": source}
    return jobs.create_job(db, job_id, trigger=trigger, overrides=overrides, max_waiting=settings.max_waiting_jobs)


def show_waiting(task: Task, job_id: str, db: Db) -> None:
    """A waiting job is visible before it is sent: WAITING in the result backend (`AsyncResult(id).state`)
    and a `task-waiting` event, which Flower shows as state WAITING. Best effort: display only."""
    active = jobs.active_job(db)
    info = {"job_id": job_id, "status": jobs.WAITING, "behind": active["_id"] if active else None}
    try:
        task.backend.store_result(job_id, info, WAITING_STATE)
    except (OperationalError, OSError):
        log.warning("job %s is recorded waiting; its WAITING state was not stored", job_id, exc_info=True)
    announce_waiting(task.app, job_id, info["behind"])


class RecordsItsJob(Task):  # type: ignore[misc]  # Celery ships no types
    """A Celery task whose `delay()` records a manual training job before returning."""

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, task_id: str | None = None, **options: Any
    ) -> AsyncResult:
        kwargs = dict(kwargs or {})
        if args or "job_id" in kwargs or self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        # `train_reranker.delay(index="fr")`: the job is the index's, recorded in its jobs, sent to its queue.
        settings = process_settings().for_index(kwargs.pop("index", DEFAULT))
        job_id = task_id or new_manual_id(settings.index_spec)
        db = connect(settings)
        try:
            ensure_indexes(db)
            status = record_manual_job(db, job_id, kwargs, source="task", settings=settings)
            if status == jobs.WAITING:
                show_waiting(self, job_id, db)
                return self.AsyncResult(job_id)
            if status is None:
                log.warning("job %s exists already; not sent again", job_id)
                return self.AsyncResult(job_id)
            # If the broker is down this raises; the job stays recorded and unsent, and the outbox sends it.
            index = settings.index_spec
            sent = {"job_id": job_id} if index.is_default else {"job_id": job_id, "index": index.name}
            result = super().apply_async(kwargs=sent, task_id=job_id, **{**options, "queue": index.queue})
            jobs.mark_sent(db, job_id)
            return result
        finally:
            db.client.close()
