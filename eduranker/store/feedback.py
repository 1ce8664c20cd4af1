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
# Only the values that become labels; what the producer counts.
USABLE_FEEDBACK: dict[str, Any] = {"feedback": {"$in": list(LABELS)}}


def newer_than(watermark: datetime) -> dict[str, Any]:
    """Feedback set after `watermark` (feedback_at, or created_at for inserts that carry feedback)."""
    return {
        "$or": [
            {"feedback_at": {"$gt": watermark}},
            {"feedback_at": {"$exists": False}, "created_at": {"$gt": watermark}},
        ]
    }


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


def count_usable_feedback(db: Database, since: datetime | None = None) -> dict[str, int]:
    """Likes and dislikes currently in `inferences` (optionally only those set after `since`)."""
    match: dict[str, Any] = dict(USABLE_FEEDBACK)
    if since is not None:
        match = {"$and": [USABLE_FEEDBACK, newer_than(since)]}
    counts = {"like": 0, "dislike": 0}
    for row in db[INFERENCES].aggregate([{"$match": match}, {"$group": {"_id": "$feedback", "n": {"$sum": 1}}}]):
        counts[row["_id"]] = int(row["n"])
    return counts
