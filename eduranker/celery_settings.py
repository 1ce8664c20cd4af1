"""Celery's settings derived from the trainer's `Settings`: `from_settings(settings)`, every value with its
reason, and the task's name and default queue. `celeryconfig.py` (Celery's configuration module, what
`app.config_from_object("celeryconfig")` reads) serves these under Celery's lowercase names; code that holds
its own Settings (the producer, the CLI, tests) calls `from_settings(settings)` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eduranker.indexes import DEFAULT, Index
from eduranker.settings import Settings

TASK_NAME = "eduranker.train_reranker"
TRAINING_QUEUE = "training"


@dataclass(frozen=True)
class RouteByIndex:
    """Celery's router: a training job goes to its index's queue (`training`, `training.<name>`), however
    it is sent (the outbox, `delay(index=...)`, a retry, a message sent by name). A name no index has goes
    to the default queue, where a worker fails it with the reason instead of it waiting on a queue no
    worker serves."""

    indexes: frozenset[str]

    def __call__(self, name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> Any:
        if name != TASK_NAME:
            return None
        index = (kwargs or {}).get("index") or DEFAULT
        return {"queue": Index(index).queue if index in self.indexes else TRAINING_QUEUE}


def from_settings(settings: Settings) -> dict[str, Any]:
    hard_limit = settings.task_time_limit
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        # JSON only: a pickle payload from anyone who can reach the broker would run code on the GPU box.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the job ends, so a worker killed mid-training leaves the message to be redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One job at a time per worker; never hold a second job hostage behind an hour of training.
        "worker_prefetch_multiplier": 1,
        # Redis redelivers unacked messages after the visibility timeout: it must outlast the longest job,
        # or a healthy job would be handed to a second worker while still running. A killed worker's job
        # comes back after it; the sweep that finds such messages runs every tenth of it (at most 10 s).
        "broker_transport_options": {
            "visibility_timeout": settings.redelivery_after_s,
            "unacked_restore_interval": min(10, max(1, int(settings.redelivery_after_s / 10))),
            "unacked_restore_throttle": 1,
        },
        "task_time_limit": hard_limit,
        # The soft limit raises inside the task first, so the job is recorded as failed before the kill.
        "task_soft_time_limit": hard_limit - min(60, max(1, hard_limit // 10)),
        # On SIGTERM (with REMAP_SIGTERM=SIGQUIT, set where workers start) a job gets this long to end,
        # then the worker cancels it: the job's run hands it back and the message is restored to the queue,
        # so another worker starts it at once instead of after the visibility timeout.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_seconds,
        # A fresh child per job returns all model and GPU memory to the system between jobs.
        "worker_max_tasks_per_child": 1,
        # STARTED and PROGRESS states, task events and extended results are what Flower shows live.
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_extended": True,
        # Result-backend keys expire after a week (docs/retention.md): the outcome lives on in training_jobs.
        "result_expires": 7 * 24 * 3600,
        "task_routes": (RouteByIndex(frozenset(i.name for i in settings.all_indexes)),),
        # Keep trying the broker at start-up instead of exiting while redis is still booting.
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
