"""The Celery app factory and how a training job is sent by name (no torch needed to enqueue)."""

from __future__ import annotations

import logging
import time

from celery import Celery
from kombu.exceptions import OperationalError

from eduranker.celery_settings import TASK_NAME, TRAINING_QUEUE, from_settings
from eduranker.indexes import DEFAULT_INDEX, Index
from eduranker.settings import Settings
from eduranker.store import jobs
from eduranker.store.types import Db, index_of

log = logging.getLogger(__name__)

__all__ = [
    "TASK_NAME",
    "TRAINING_QUEUE",
    "announce_waiting",
    "hand_on",
    "make_celery",
    "send_training_job",
    "send_unsent",
    "send_with_retry",
]


def make_celery(settings: Settings, main: str = "eduranker") -> Celery:
    """A sender's app. It has no result backend: a sender never reads results, and with one Celery
    would subscribe the sender to every sent job's result channel (a long-running producer would hold
    one subscription per job). The worker still stores each result (the message asks it to), so
    `AsyncResult(job_id)` in any process with the backend configured reads the job's outcome."""
    app = Celery(main)
    app.conf.update(from_settings(settings))
    # As the app's backend class: Celery lets a CELERY_RESULT_BACKEND variable in the environment (our own
    # setting's name, so always set in our processes) override any configured result backend, not this.
    app.backend_cls = "disabled"
    return app


def send_training_job(app: Celery, job_id: str, index: Index = DEFAULT_INDEX) -> None:
    """Send the task for an already recorded job; the job id doubles as Celery's task id (Flower shows it).
    It goes to its index's queue (`training`, `training.<name>`): a worker can serve some indexes only.

    The result is stored by the worker under the job id, so a manual job sent here once its slot freed
    ends the `AsyncResult` its `delay()` returned; the sender itself needs only the broker (`make_celery`).
    """
    kwargs = {"job_id": job_id} if index.is_default else {"job_id": job_id, "index": index.name}
    app.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue=index.queue, retry=True, ignore_result=False)


def announce_waiting(app: Celery, job_id: str, behind: str | None) -> None:
    """A `task-waiting` event for a job recorded waiting (not sent yet): Flower shows it in state WAITING.
    Best effort, display only: the job's record is what counts."""
    try:
        with app.events.default_dispatcher() as dispatcher:
            # `received`: Flower's task list sorts by it, newest first; without it a waiting job sorted last.
            dispatcher.send("task-waiting", uuid=job_id, name=TASK_NAME, result=f"waiting behind {behind}",
                            received=time.time())  # fmt: skip
    except (OperationalError, ConnectionError, OSError):
        log.warning("job %s is recorded waiting; its WAITING event was not sent", job_id, exc_info=True)


def send_with_retry(app: Celery, db: Db, job_id: str, *, max_wait_s: float | None = None) -> bool:
    """Send until the broker takes it (backoff up to 30 s), then mark it sent. False only if
    `max_wait_s` ran out: the job stays recorded and unsent, and the next pass sends it."""
    delay, started = 0.5, time.monotonic()
    while True:
        try:
            send_training_job(app, job_id, index_of(db))
            jobs.mark_sent(db, job_id)
            return True
        except (OperationalError, ConnectionError, OSError) as exc:
            if max_wait_s is not None and time.monotonic() - started + delay > max_wait_s:
                log.warning("broker unreachable; job %s stays recorded and unsent: %s", job_id, exc)
                return False
            log.warning("broker unreachable (%s); retrying job %s in %.1f s", exc, job_id, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def hand_on(app: Celery, db: Db, *, max_wait_s: float | None = None) -> str | None:
    """Move the oldest waiting job into the slot if it is free, and send it: what the run that frees
    the slot does, so a waiting job starts whether or not a producer runs. Conditional (one mover wins);
    unsent (a broker down), the next pass of whoever comes first sends it. Returns the job moved."""
    job_id = jobs.advance_waiting(db)
    if job_id is not None:
        send_with_retry(app, db, job_id, max_wait_s=max_wait_s)
    return job_id


def send_unsent(app: Celery, db: Db, *, max_wait_s: float | None = None) -> list[str]:
    """Move a waiting job into a free slot, then send every queued job not yet sent (a crash between
    insert and send, a hand-back, a resend): the outbox's one sending pass."""
    jobs.advance_waiting(db)
    return [job["_id"] for job in jobs.unsent_jobs(db) if send_with_retry(app, db, job["_id"], max_wait_s=max_wait_s)]
