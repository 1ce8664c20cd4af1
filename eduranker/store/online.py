"""Live metrics per version, from `inferences` (`model_version`, `feedback`): what users think of each
version since the current champion was promoted. Each count is a range of one index, so a refresh
costs the results counted, never a scan of the collection. The impressions the online guard compares
(`impressions`) cost the feedback since the promotion and the results of the searches it was given on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from eduranker.store.connection import INFERENCES, MODEL_VERSIONS, USER_QUERIES, ensure_index
from eduranker.store.jobs import now
from eduranker.store.types import Db


def ensure_online_indexes(db: Db) -> None:
    # ensure_index: an existing index with the same keys under another name serves (no conflict).
    ensure_index(db[INFERENCES], [("model_version", ASCENDING), ("created_at", ASCENDING)], "served_by_version")
    ensure_index(
        db[INFERENCES],
        [("model_version", ASCENDING), ("feedback", ASCENDING), ("created_at", ASCENDING)],
        "feedback_by_version",
    )
    # The versions that served one search: tells an interleaved impression from a holdback one.
    ensure_index(db[INFERENCES], [("query_id", ASCENDING), ("model_version", ASCENDING)], "impression_versions")


def live_counts(db: Db, version: str | None, since: datetime) -> dict[str, Any]:
    """Results served by `version` since `since`, and the likes and dislikes users gave them."""

    def count(**extra: Any) -> int:
        return db[INFERENCES].count_documents({"model_version": version, **extra, "created_at": {"$gte": since}})

    likes, dislikes = count(feedback="like"), count(feedback="dislike")
    return {
        "version": version,
        "since": since,
        "served": count(),
        "feedback": likes + dislikes,
        "likes": likes,
    }


def store_online(db: Db, version: str, online: dict[str, Any]) -> None:
    db[MODEL_VERSIONS].update_one({"version": version}, {"$set": {"online": {**online, "refreshed_at": now()}}})


CHUNK = 1000  # ids per `$in`: keeps each command small whatever the feedback since the promotion


@dataclass
class ImpressionRow:
    """One search with feedback on results of the compared versions."""

    query_id: Any
    user_id: str | None = None
    served: set[str | None] = field(default_factory=set)
    likes: dict[str | None, int] = field(default_factory=dict)
    dislikes: dict[str | None, int] = field(default_factory=dict)


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def impressions(db: Db, compared: Sequence[str | None], since: datetime) -> list[ImpressionRow]:
    """Searches since `since` whose results of `compared` versions drew feedback: per version the likes
    and dislikes, every version that served a result in it, and the user who searched (if known)."""
    reactions = db[INFERENCES].aggregate([
        {"$match": {"model_version": {"$in": list(compared)}, "feedback": {"$in": ["like", "dislike"]},
                    "created_at": {"$gte": since}}},
        {"$group": {"_id": {"q": "$query_id", "v": "$model_version", "f": "$feedback"}, "n": {"$sum": 1}}},
    ])  # fmt: skip
    rows: dict[Any, ImpressionRow] = {}
    for doc in reactions:
        key = doc["_id"]
        row = rows.setdefault(key["q"], ImpressionRow(key["q"]))
        side = row.likes if key["f"] == "like" else row.dislikes
        side[key.get("v")] = side.get(key.get("v"), 0) + int(doc["n"])
    ids = list(rows)
    for chunk in _chunks(ids):
        served = db[INFERENCES].aggregate([
            {"$match": {"query_id": {"$in": chunk}}},
            {"$group": {"_id": {"q": "$query_id", "v": "$model_version"}}},
        ])  # fmt: skip
        for doc in served:
            rows[doc["_id"]["q"]].served.add(doc["_id"].get("v"))
        for query in db[USER_QUERIES].find({"_id": {"$in": chunk}}, {"user_id": 1}):
            user = query.get("user_id")
            rows[query["_id"]].user_id = None if user is None or user == "" else str(user)
    return list(rows.values())


def record_guard_decision(db: Db, version: str, decision: dict[str, Any]) -> None:
    """Keep a rollback decision's figures on the version it demoted (one entry per decision)."""
    entry = {**decision, "at": now()}
    db[MODEL_VERSIONS].update_one(
        {"version": version}, {"$set": {"guard_decision": entry}, "$push": {"guard_decisions": entry}}
    )
