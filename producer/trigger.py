"""The trigger's inputs read from the database: the window's counts, and the next trigger described
in the policy's own words (for `eduranker status` and the demo); the thresholds are
`settings.config(Thresholds)`."""

from __future__ import annotations

from datetime import datetime

from eduranker.settings import Settings
from eduranker.store.clock import server_now
from eduranker.store.feedback import count_labels
from eduranker.store.types import Db
from producer.history import read_history
from producer.policy import FeedbackCounts, JobHistory, Thresholds, decide, is_first_model, waiting_reason


def read_counts(
    db: Db, history: JobHistory, *, cap: int | None = None, until: datetime | None = None
) -> FeedbackCounts:
    """Usable feedback in the trigger window: all of it before a first model, since the window's
    watermark after (counting stops at `cap`, all a retrain decision needs); none dated after `until`
    (the server's now: future-dated feedback waits for its time)."""
    if is_first_model(history):
        counts = count_labels(db, until=until)
    else:
        counts = count_labels(db, history.window_since, cap=cap, until=until)
    return FeedbackCounts(likes=counts["like"], dislikes=counts["dislike"])


def describe_next_trigger(db: Db, settings: Settings) -> str:
    """The next trigger and what the producer waits for now, in the policy's own words."""
    th = settings.config(Thresholds)
    history = read_history(db, th.retry_limit)
    at = server_now(db)
    window = read_counts(db, history, until=at)
    reason = waiting_reason(history, th, at) or decide(window, history, th, at).reason
    if is_first_model(history):
        return f"first model at {th.min_feedback} feedbacks ({window.total} so far); now: {reason}"
    return f"retrain at {th.new_feedback} new feedbacks ({window.total} so far); now: {reason}"
