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
from producer.policy import Decision, FeedbackCounts, JobHistory, Thresholds, decide, is_first_model


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
    reason = in_words(decide(window, history, th, at), at)
    if is_first_model(history):
        return f"first model at {th.min_feedback} feedbacks ({window.total} so far); now: {reason}"
    return f"retrain at {th.new_feedback} new feedbacks ({window.total} so far); now: {reason}"


def in_words(decision: Decision, now: datetime) -> str:
    """The decision's reason, and for a wait what is left of it at `now` (the server's): the reason
    names the wait's end, so that it stays the same while the wait lasts."""
    if decision.until is None:
        return decision.reason
    left = max(0.0, (decision.until - now).total_seconds())
    return f"{decision.reason} ({left:.0f} s left)"
