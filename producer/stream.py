"""The feedback change stream: which events wake the producer, how they are read, when to evaluate.

The stream is a wake-up signal only: counts are read from the database. Events pile up on the server
until the next evaluation is due, then are read in a few large batches (`drain`): one small getMore
per event would cost the server more than the writes do. `Pacing` (pure) says when an evaluation is
due: a batch at most `max_batch_s` after the last one under a stream that never pauses, an idle one
every `idle_eval_s`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.change_stream import ChangeStream

from eduranker.store.connection import INFERENCES
from eduranker.store.types import Db, Document

# Only events that can change feedback wake us: inserts that carry it, updates that set or remove it,
# replaces and deletes (which may take a feedback away), and invalidate (the stream ends).
WATCH_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert", "fullDocument.feedback": {"$exists": True}},
                {"operationType": "update", "updateDescription.updatedFields.feedback": {"$exists": True}},
                {"operationType": "update", "updateDescription.removedFields": "feedback"},
                {"operationType": {"$in": ["replace", "delete", "invalidate"]}},
            ]
        }
    }
]
# Server codes for a resume point the server no longer has or refuses: FailedToParse, InvalidResumeToken,
# ChangeStreamFatalError, ChangeStreamHistoryLost.
RESUME_FAILED_CODES = {9, 260, 280, 286}
AWAIT_S = 0.25  # how long one getMore waits on the server for an event
MAX_FETCHES = 2


def open_stream(db: Db, resume_token: Mapping[str, Any] | None) -> ChangeStream[Document]:
    return db[INFERENCES].watch(WATCH_PIPELINE, resume_after=resume_token, max_await_time_ms=int(AWAIT_S * 1000))


def is_buffered(stream: Any) -> bool:
    """Whether the stream's next change is already in pymongo's local batch (no round trip to fetch it).

    pymongo has no public call for this. Without its cursor's `_has_next` the answer is True, so no read
    counts as a fetch and only the drain's time bound applies. tests/test_producer.py checks it is there.
    """
    has_next = getattr(getattr(stream, "_cursor", None), "_has_next", None)
    return bool(has_next()) if callable(has_next) else True


def drain(stream: Any, stop: threading.Event, *, budget_s: float, idle: bool) -> list[Document]:
    """The events that have piled up, not the tail: under steady writes every getMore would return the
    one event written meanwhile, so a drain makes at most MAX_FETCHES round trips in `budget_s`."""
    changes: list[Document] = []
    until, fetches = time.monotonic() + budget_s, 0
    while time.monotonic() < until and not stop.is_set():
        if not is_buffered(stream):
            if fetches == MAX_FETCHES:
                break
            fetches += 1
        asked = time.monotonic()
        change = stream.try_next()  # waits up to AWAIT_S on an empty stream
        if change is None:
            # An empty batch back early means writes elsewhere moved the server's clock; asking again
            # at once would cost the server one getMore per write anywhere.
            if idle and not changes:
                stop.wait(max(0.0, AWAIT_S - (time.monotonic() - asked)))
            break
        changes.append(change)
        if change["operationType"] == "invalidate":
            break
    return changes


@dataclass
class Pacing:
    """When the next evaluation is due (pure: `at` is the caller's monotonic time)."""

    max_batch_s: float
    idle_eval_s: float
    last_eval: float  # monotonic
    pending: int = 0  # events read since the last evaluation
    gap: float = 0.0  # between evaluations while events arrive; stretched by slow counting

    def __post_init__(self) -> None:
        self.gap = self.gap or self.max_batch_s

    def wait_s(self, at: float) -> float:
        """How long to let events pile up before draining: none while idle (the drain waits itself)."""
        return max(0.0, self.last_eval + self.gap - at) if self.pending else 0.0

    def due(self, at: float) -> bool:
        waited = at - self.last_eval
        return (self.pending > 0 and waited >= self.gap) or waited >= self.idle_eval_s

    def evaluated(self, at: float, read_s: float) -> None:
        # Slow counting (a large window, a busy server) stretches the gap so that it takes at most a
        # fifth of the time.
        self.pending, self.last_eval = 0, at
        self.gap = max(self.max_batch_s, 4 * read_s)
