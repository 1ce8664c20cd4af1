"""The Celery app factory and how a training job is sent by name (no torch needed to enqueue)."""

from __future__ import annotations

from celery import Celery

import celeryconfig
from celeryconfig import TASK_NAME, TRAINING_QUEUE
from eduranker.settings import Settings

__all__ = ["TASK_NAME", "TRAINING_QUEUE", "make_celery", "send_training_job"]


def make_celery(settings: Settings, main: str = "eduranker") -> Celery:
    app = Celery(main)
    app.conf.update(celeryconfig.from_settings(settings))
    return app


def send_training_job(app: Celery, job_id: str) -> None:
    """Send the task for an already recorded job; the job id doubles as Celery's task id (Flower shows it).

    The outcome lives in `training_jobs` (and in Flower, from task events), so the sender asks for no
    result: it then needs only the broker, and a long-running producer holds no subscription per job.
    """
    app.send_task(
        TASK_NAME, kwargs={"job_id": job_id}, task_id=job_id, queue=TRAINING_QUEUE, retry=True, ignore_result=True
    )
