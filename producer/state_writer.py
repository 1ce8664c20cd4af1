"""When the producer's state is written, and what it holds.

Written when the decision changes and at most once a second otherwise (`STATE_WRITE_S`): a restart
replays at most a second of events that were already evaluated. The document (`producer_state`) is
what `eduranker status` and the metrics show: the last decision, the counts, the stream's position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producer.policy import Decision
from producer.trigger_state import Count

log = logging.getLogger(__name__)
STATE_WRITE_S = 1.0  # the producer's state (last decision, resume token) is written at most this often


@dataclass
class StateWrites:
    """The last decision logged and when the state was last written (monotonic)."""

    last_reason: str = ""
    written_at: float = 0.0

    def due(self, decision: Decision, at: float) -> bool:
        """Whether to write now; a changed decision is logged here, once."""
        changed = decision.reason != self.last_reason
        if changed:
            log.info("%s", decision.reason)
            self.last_reason = decision.reason
        return changed or at - self.written_at >= STATE_WRITE_S

    def written(self, at: float) -> None:
        self.written_at = at


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
