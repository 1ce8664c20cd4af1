"""When the producer's state is written, and what it holds.

The document (`producer_state`, `_id: "producer"`) is what `eduranker status`, the metrics and a
restart read: the last decision, the counts, the stream's position, when the leader last evaluated, the
duties' report. It is written when what it shows changes (the decision's reason, or the counts read),
and otherwise only as often as a reader needs it: after change events within `EVENTS_WRITE_S` (the
resume token), and at least every `LIVENESS_WRITE_S` (the lag metric's `evaluated_at`). A reason
changes only when the decision does (a wait names its end on the server's clock, `producer/policy.py`),
so the log gets one line per changed decision and a cooldown costs one write, then one per
`LIVENESS_WRITE_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producer.policy import Decision
from producer.trigger_state import Count

log = logging.getLogger(__name__)

# After change events, the resume token (and the newest event's time) is saved at most this often: a
# restart replays at most this long of events already evaluated, and replaying is harmless (an event
# only wakes the evaluation, the counts are read from the database, job ids derive from the watermark).
EVENTS_WRITE_S = 5.0
# Written at least this often, whatever happens: `evaluated_at` is what `eduranker_producer_lag_seconds`
# reads, and EduRankerProducerLagHigh fires past 60 s of it; 15 s (the metrics' own refresh interval)
# keeps a working leader's lag under a quarter of that. The write also carries an idle stream's resume
# token (so it never goes stale) and the duties' run counts.
LIVENESS_WRITE_S = 15.0


def shown(decision: Decision, count: Count | None) -> tuple[str, dict[str, object] | None]:
    """What the state shows of an evaluation: its reason and, when it read them, the counts."""
    return decision.reason, None if count is None else count.as_state()


@dataclass
class StateWrites:
    """When the state was last written (on `clock`, this process's monotonic time) and what it showed;
    the last decision logged."""

    clock: Callable[[], float] = time.monotonic
    last_reason: str = ""
    last_shown: tuple[str, dict[str, object] | None] | None = None  # None: write at the next evaluation
    written_at: float = 0.0
    unsaved_events: int = 0  # change events evaluated since the last write

    def due(self, decision: Decision, count: Count | None, events: int = 0) -> bool:
        """Whether to write after an evaluation of `events` change events; a changed decision is logged
        here, once."""
        if decision.reason != self.last_reason:
            log.info("%s", decision.reason)
            self.last_reason = decision.reason
        self.unsaved_events += events
        if self.last_shown is None or shown(decision, count) != self.last_shown:
            return True
        since = self.clock() - self.written_at
        return since >= LIVENESS_WRITE_S or (self.unsaved_events > 0 and since >= EVENTS_WRITE_S)

    def written(self, decision: Decision, count: Count | None) -> None:
        self.last_shown, self.written_at, self.unsaved_events = shown(decision, count), self.clock(), 0

    def forget(self) -> None:
        """Write at the next evaluation (this producer leads again: another may have written meanwhile)."""
        self.last_shown = None


def state_fields(
    decision: Decision,
    count: Count | None,
    now: datetime,
    *,
    events_until: datetime | None,
    resume_token: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The evaluation's part of `producer_state`; fields it has nothing new for are left as they are."""
    state: dict[str, Any] = {"last_decision": decision.reason, "evaluated_at": now}
    if count is not None:
        state.update(count.as_state())
    if events_until is not None:
        state["last_event_wall_time"] = events_until
    if resume_token is not None:
        state["resume_token"] = resume_token
    return state
