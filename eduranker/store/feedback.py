"""The feedback we read: one match shared by counting and snapshot, and the snapshot aggregation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo.database import Database

from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES

LABELS = {"like": 1.0, "dislike": 0.0}

# Any inference a user reacted to, malformed values included, so the snapshot can count them.
FEEDBACK_PRESENT: dict[str, Any] = {"feedback": {"$exists": True, "$ne": None}}


def _clipped(path: str, max_chars: int) -> dict[str, Any]:
    # Strings are cut server-side so a megabyte text never travels; other types arrive as null
    # and their BSON type name travels beside them for the skip reason.
    return {"$cond": [{"$eq": [{"$type": path}, "string"]}, {"$substrCP": [path, 0, max_chars]}, None]}


def _length(path: str) -> dict[str, Any]:
    return {"$cond": [{"$eq": [{"$type": path}, "string"]}, {"$strLenCP": path}, 0]}


def snapshot_pipeline(max_text_chars: int) -> list[dict[str, Any]]:
    """One aggregation: inferences with feedback, joined to their query and resource texts."""
    return [
        {"$match": FEEDBACK_PRESENT},
        {"$lookup": {"from": USER_QUERIES, "localField": "query_id", "foreignField": "_id", "as": "_q"}},
        {"$lookup": {"from": RESOURCES, "localField": "resource_id", "foreignField": "_id", "as": "_r"}},
        {"$set": {"_q": {"$first": "$_q"}, "_r": {"$first": "$_r"}}},
        {
            "$project": {
                "_id": 1,
                "query_id": 1,
                "resource_id": 1,
                "feedback": 1,
                "feedback_at": 1,
                "created_at": 1,
                "query_found": {"$eq": [{"$type": "$_q"}, "object"]},
                "resource_found": {"$eq": [{"$type": "$_r"}, "object"]},
                "query_text": _clipped("$_q.query_text", max_text_chars),
                "query_text_type": {"$type": "$_q.query_text"},
                "query_text_length": _length("$_q.query_text"),
                "title": _clipped("$_r.title", max_text_chars),
                "title_type": {"$type": "$_r.title"},
                "description": _clipped("$_r.description", max_text_chars),
                "description_type": {"$type": "$_r.description"},
                "document_length": {"$add": [_length("$_r.title"), _length("$_r.description")]},
            }
        },
    ]


def iter_feedback_rows(db: Database, max_text_chars: int, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Stream the joined rows; memory stays bounded by the batch size and the text clip."""
    cursor = db[INFERENCES].aggregate(snapshot_pipeline(max_text_chars), allowDiskUse=True, batchSize=batch_size)
    with cursor:
        yield from cursor


def _window(label: str, since: datetime | None) -> list[dict[str, Any]]:
    """Feedback `label` set after `since`: by feedback_at, or by created_at for inserts without one.

    Each filter fixes the label first, so it is one range of the `feedback_window` index.
    """
    if since is None:
        return [{"feedback": label}]
    return [
        {"feedback": label, "feedback_at": {"$gt": since}},
        {"feedback": label, "feedback_at": None, "created_at": {"$gt": since}},
    ]


def count_usable_feedback(db: Database, since: datetime | None = None, *, cap: int | None = None) -> dict[str, int]:
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
            counts[label] += db[INFERENCES].count_documents(query, **({"limit": left} if left else {}))
    return counts


def latest_feedback_at(db: Database, since: datetime | None = None) -> datetime | None:
    """When the newest usable feedback was set (created_at for an insert without feedback_at).

    With `since` (the last watermark) only that window is searched: the answer is the same whenever
    the window holds feedback, and a server that sorts without the index reads only the window.
    """
    after = {"$gt": since} if since is not None else {"$type": "date"}
    newest = None
    for label in LABELS:
        for query, key in (
            ({"feedback": label, "feedback_at": after}, "feedback_at"),
            ({"feedback": label, "feedback_at": None, "created_at": after}, "created_at"),
        ):
            doc = db[INFERENCES].find_one(query, {key: 1}, sort=[(key, -1)])
            if doc is not None and (newest is None or doc[key] > newest):
                newest = doc[key]
    return newest
