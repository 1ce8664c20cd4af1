"""The Celery task: takes ids, records the job, and hands the work to `run_training_job`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from eduranker.errors import JobBusy, RetryableError
from eduranker.queue import TASK_NAME
from eduranker.store import connect, jobs
from worker.app import app, settings
from worker.job import run_training_job

log = logging.getLogger(__name__)


@app.task(
    bind=True,
    name=TASK_NAME,
    autoretry_for=(RetryableError,),
    retry_backoff=15,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def train_reranker(self, job_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Train, evaluate and register a reranker. Without `job_id` it records a job of its own."""
    db = connect(settings)
    if job_id is None:
        job_id = self.request.id or f"manual-{uuid.uuid4().hex}"
        reason = overrides.get("reason") or "manual"
        jobs.create_job(db, job_id, trigger={"reason": reason, "source": "task"}, overrides=overrides, sent=True)

    def report(stage: str, **details: Any) -> None:
        progress = {"job_id": job_id, "stage": stage, **details}
        if self.request.id:
            self.update_state(state="PROGRESS", meta=progress)
        jobs.update_job(db, job_id, progress=progress)

    try:
        return run_training_job(settings, job_id, worker_name=self.request.hostname or "local", report=report, db=db)
    except JobBusy as exc:
        # Not an autoretry with backoff: wait exactly until the other run must have beaten again.
        raise self.retry(exc=exc, countdown=exc.retry_after_s) from exc
