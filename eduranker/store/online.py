"""Live metrics per version, from `inferences` (`model_version`, `feedback`): what users think of each
version since the current champion was promoted. Each count is a range of one index, so a refresh
costs the results counted, never a scan of the collection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from eduranker.store.connection import INFERENCES, MODEL_VERSIONS
from eduranker.store.jobs import now
from eduranker.store.types import Db


def ensure_online_indexes(db: Db) -> None:
    db[INFERENCES].create_index([("model_version", ASCENDING), ("created_at", ASCENDING)], name="served_by_version")
    db[INFERENCES].create_index(
        [("model_version", ASCENDING), ("feedback", ASCENDING), ("created_at", ASCENDING)],
        name="feedback_by_version",
    )


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
