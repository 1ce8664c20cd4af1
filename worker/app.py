"""The worker's Celery app, configured from the settings read once at start."""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_init, worker_ready
from pymongo.errors import PyMongoError

from eduranker import champion
from eduranker.settings import process_settings
from eduranker.store import connect

log = logging.getLogger(__name__)

settings = process_settings()
app = Celery("eduranker-worker")
# Celery's own form: the configuration module, whose names derive from the same `settings` object.
app.config_from_object("celeryconfig")
app.conf.include = ["worker.tasks"]


@worker_init.connect
def pin_gpu(**_: object) -> None:
    """Pin this worker to one GPU before any child process exists; sets the environment only."""
    if settings.worker_gpu and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.worker_gpu
        log.info("worker pinned to GPU %s", settings.worker_gpu)


@worker_ready.connect
def reconcile_champion(**_: object) -> None:
    """A pointer left behind by a crash between registry write and symlink switch is repaired at start,
    for every index."""
    for index in settings.each_index():
        try:
            champion.reconcile(connect(index), index.models_dir, by="worker start")
        except (PyMongoError, OSError):
            log.warning("index %s: champion pointer not reconciled at start (MongoDB unreachable?)", index.index,
                        exc_info=True)  # fmt: skip
