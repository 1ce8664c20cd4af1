"""The Celery task: takes ids, records the job, and hands the work to `run_training_job`."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from eduranker.errors import JobBusy, RetryableError
from eduranker.indexes import DEFAULT
from eduranker.queue import TASK_NAME, hand_on
from eduranker.store import connect, jobs
from eduranker.store.types import Db, index_of
from worker.app import app
from worker.app import settings as worker_settings
from worker.job import outcome, run_training_job
from worker.manual import RecordsItsJob, new_manual_id, record_manual_job, show_waiting
from worker.results import JobEnded, TaskEnd, failure_for, task_end

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_shutdown_signals() -> Iterator[threading.Event]:
    """An event set when the worker cancels this job at shutdown (SIGTERM, or SIGQUIT when Celery's
    soft shutdown times out): the run then hands its job back instead of dying mid-step."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGQUIT)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_progress(progress: dict[str, Any]) -> str:
    """One line for Flower: `train: epoch 2, step 30/45, loss 0.4123`."""
    if progress.get("stage") == "train":
        return (f"train: epoch {progress.get('epoch')}, step {progress.get('step')}/{progress.get('total_steps')}, "
                f"loss {progress.get('loss')}")  # fmt: skip
    return str(progress.get("stage"))


@app.task(
    bind=True,
    base=RecordsItsJob,
    name=TASK_NAME,
    autoretry_for=(RetryableError,),
    retry_backoff=15,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def train_reranker(self: Task, job_id: str | None = None, index: str = DEFAULT, **overrides: Any) -> dict[str, Any]:
    """Train, evaluate and register a reranker of search index `index`; returns the job's outcome
    (worker/results.py says how a run ends otherwise). Without `job_id` (a message sent by name) it
    records a job of its own."""
    settings = worker_settings.for_index(index)
    db = connect(settings)
    if job_id is None:
        job_id = self.request.id or new_manual_id(settings.index_spec)
        if record_manual_job(db, job_id, overrides, source="task", settings=settings) == jobs.WAITING:
            show_waiting(self, job_id, db)
            raise Ignore()  # sent under this id once the slot frees (hand_on, the outbox); that run reports
        jobs.mark_sent(db, job_id)

    def publish(progress: dict[str, Any]) -> None:
        if self.request.id:
            self.update_state(state="PROGRESS", meta=progress)  # AsyncResult(id).info
            # Flower renders task events, not the result backend: a custom event puts the job in state
            # PROGRESS and its stage, epoch, step and loss in the Result column and on the task page.
            self.send_event("task-progress", retry=False, result=describe_progress(progress))

    try:
        with stop_on_shutdown_signals() as stop:
            run_training_job(settings, job_id, worker_name=self.request.hostname or "local",
                             on_progress=publish, db=db, stop_requested=stop)  # fmt: skip
    except JobBusy as exc:
        # Not an autoretry with backoff: wait exactly until the other run must have beaten again.
        raise self.retry(exc=exc, countdown=exc.retry_after_s) from exc
    finally:
        hand_on_slot(db)
    try:
        return end_of_run(db, job_id)
    except JobEnded as exc:
        # Flower's Result column keeps the last event's `result` (a failure event carries none): without
        # this a cancelled job showed its last stage there, its outcome only on its own page.
        if self.request.id:
            self.send_event("task-progress", retry=False, result=str(exc))
        raise


HAND_ON_BUDGET_S = 10.0  # a broker down: the job stays unsent for the outbox (or the next run's hand-on)


def hand_on_slot(db: Db) -> None:
    """The slot this run held may be free now: move the next waiting job into it and send it, so it
    starts without a producer. Best effort: any failure leaves the job waiting for the outbox."""
    try:
        moved = hand_on(app, db, max_wait_s=HAND_ON_BUDGET_S)
    except Exception:  # noqa: BLE001 - the run's own outcome must not be lost to this
        log.warning("could not hand the freed slot on; the producer's outbox will", exc_info=True)
        return
    if moved:
        log.info("job %s moved into the freed slot and sent", moved)


def end_of_run(db: Db, job_id: str) -> dict[str, Any]:
    """The job's outcome as the result, a failure state for a cancelled or failed job, or no result
    when the job is not over (the run of this id that ends it reports)."""
    job = jobs.get_job(db, job_id)
    end = task_end(job)
    if job is not None and end is TaskEnd.RESULT:
        return outcome(job, index_of(db).name)
    if job is not None and end is TaskEnd.FAILURE:
        if job["status"] == jobs.CANCELLED:
            log.warning("job %s cancelled (%s); this run stopped without registering anything", job_id,
                        job.get("reason"))  # fmt: skip
        raise failure_for(job)
    log.info("job %s is %s; the run that ends it reports its outcome", job_id, job and job.get("status"))
    raise Ignore()
