"""Counting feedback: the producer's trigger windows and watermark, each a range of one index."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eduranker.store.connection import INFERENCES
from eduranker.store.types import Db

LABELS = {"like": 1.0, "dislike": 0.0}


def _set_when(label: str, when: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(filter, time field) pairs for feedback `label` set at `when`: by feedback_at, or by created_at for
    inserts without one. Each filter fixes the label first, so it is one range of the `feedback_window`
    index."""
    return [
        ({"feedback": label, "feedback_at": when}, "feedback_at"),
        ({"feedback": label, "feedback_at": None, "created_at": when}, "created_at"),
    ]


def _window(label: str, since: datetime | None) -> list[dict[str, Any]]:
    """Filters for feedback `label` set after `since` (all of it without one)."""
    if since is None:
        return [{"feedback": label}]
    return [query for query, _ in _set_when(label, {"$gt": since})]


def count_usable_feedback(db: Db, since: datetime | None = None, *, cap: int | None = None) -> dict[str, int]:
    """Likes and dislikes currently in `inferences` (optionally only those set after `since`).

    With `cap`, counting stops once the two together reach it: enough to answer "at least cap?" at a
    cost bounded by the cap rather than by the backlog.
    """
    counts = {"like": 0, "dislike": 0}
    for label in LABELS:
        for query in _window(label, since):
            left = None if cap is None else cap - sum(counts.values())
            if left is not None and left <= 0:
                return counts
            # pymongo turns `limit` into a $limit stage, which must not be 0: no limit is no argument.
            collection = db[INFERENCES]
            counts[label] += (
                collection.count_documents(query, limit=left) if left else collection.count_documents(query)
            )
    return counts


def latest_feedback_at(db: Db, since: datetime | None = None) -> datetime | None:
    """When the newest usable feedback was set (created_at for an insert without feedback_at).

    With `since` (the last watermark) only that window is searched: the answer is the same whenever
    the window holds feedback, and a server that sorts without the index reads only the window.
    """
    after = {"$gt": since} if since is not None else {"$type": "date"}
    newest = None
    for label in LABELS:
        for query, key in _set_when(label, after):
            doc = db[INFERENCES].find_one(query, {key: 1}, sort=[(key, -1)])
            if doc is not None and (newest is None or doc[key] > newest):
                newest = doc[key]
    return newest
