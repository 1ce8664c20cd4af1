"""Whether a Celery worker serving a given queue (an index's) is alive: Celery's own `active_queues`
broadcast over the broker.

Asked only when a queued job has used up its resends, to tell "no worker is running" (wait, and say
so) from "the message was lost" (fail with the reason).
"""

from __future__ import annotations

import logging

from celery import Celery

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 1.0  # a worker busy training still answers: pings are handled by its main process


def workers_serving(app: Celery, queue: str, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True when a worker that consumes `queue` answered within `timeout_s` (Celery's `active_queues`
    broadcast): a worker of another index alive is no worker for this one. A broker that cannot be
    reached counts as no answer (the job waits rather than fails)."""
    try:
        replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    except Exception:  # the broker is down: nothing can be sent or claimed anyway
        log.warning("could not ask the workers for their queues", exc_info=True)
        return False
    return any(q.get("name") == queue for queues in replies.values() for q in queues or [])
