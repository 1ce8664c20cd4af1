"""Whether any Celery worker is alive: Celery's own `ping` broadcast over the broker.

Asked only when a queued job has used up its resends, to tell "no worker is running" (wait, and say
so) from "the message was lost" (fail with the reason).
"""

from __future__ import annotations

import logging

from celery import Celery

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 1.0  # a worker busy training still answers: pings are handled by its main process


def workers_alive(app: Celery, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True when at least one worker answered within `timeout_s`; a broker that cannot be reached
    counts as no answer (the job waits rather than fails)."""
    try:
        replies = app.control.ping(timeout=timeout_s)
    except Exception:  # the broker is down: nothing can be sent or claimed anyway
        log.warning("could not ping the workers", exc_info=True)
        return False
    return bool(replies)
