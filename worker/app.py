"""The worker's Celery app, configured from the settings read once at start."""

from __future__ import annotations

import logging
import os

from celery.signals import worker_init

from eduranker.queue import make_celery
from eduranker.settings import Settings

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings, "eduranker-worker")
app.conf.include = ["worker.tasks"]


@worker_init.connect
def pin_gpu(**_: object) -> None:
    """Pin this worker to one GPU before any child process exists; sets the environment only."""
    if settings.worker_gpu and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.worker_gpu
        log.info("worker pinned to GPU %s", settings.worker_gpu)
