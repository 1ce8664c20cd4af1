"""Backing off after a failed watch while still leading: the lease renewed, evaluations on time.

A change stream the server refuses (Interrupted, MaxTimeMSExpired, Unauthorized while a role is being
fixed) loses the producer its wake-ups, not its duties. During the back-off the leader evaluates every
`every_s`, as it does on an idle stream: each evaluation renews the lease, runs the housekeeping that is
due (requeue, resend, reconcile, the online guard, retention) and counts the trigger's window. Without
this, a refusal that lasts let the lease lapse at every back-off longer than the lease, and the duties
ran once per back-off (up to 30 s). An evaluation renews the lease first and runs the duties before it
counts, so one refused at its count (a role that lost `find` on `inferences`) still did both.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Lease(Protocol):
    def held(self) -> bool: ...


class Leader(Protocol):
    stop_event: threading.Event

    @property
    def lease(self) -> _Lease: ...

    def evaluate(self) -> Any: ...


def back_off_leading(leader: Leader, seconds: float, every_s: float) -> int:
    """Wait `seconds` (or until stopped), evaluating every `every_s` while the lease is held; returns the
    evaluations that succeeded. One that fails (the trigger's count refused too) has still renewed the
    lease and run the duties before it failed, so they go on; the first failure of a back-off is logged."""
    until, evaluations, failures = time.monotonic() + seconds, 0, 0
    while (left := until - time.monotonic()) > 0:
        if leader.stop_event.wait(min(left, every_s)):
            break
        if left <= every_s or not leader.lease.held():
            continue
        try:
            leader.evaluate()
            evaluations += 1
        except Exception as exc:  # the loop's next try reports the fault (loop_failures, loop_error)
            failures += 1
            log.log(logging.INFO if failures == 1 else logging.DEBUG, "evaluation while backing off failed: %s", exc)
    return evaluations
