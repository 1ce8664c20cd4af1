"""Live metrics per version, from `inferences` (`model_version`, `feedback`): what users think of each
version since the current champion was promoted. Each count is a range of one index, so it costs the
results counted, never a scan of the collection. The impressions the online guard compares
(`impressions`) cost the feedback since the promotion and the results of the searches it was given on;
`impression_rows` reads given searches alone (what the running sums of `producer/live_comparison.py`
read for the searches a change touched)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from eduranker.store.clock import as_utc, server_now
from eduranker.store.comparison_sums import ensure_sums_indexes
from eduranker.store.connection import INFERENCES, MODEL_VERSIONS, PRODUCER_STATE, USER_QUERIES, ensure_index
from eduranker.store.jobs import now
from eduranker.store.types import Db, index_of


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
    ensure_sums_indexes(db)


def served_by(db: Db, versions: Sequence[str | None]) -> dict[str, Any]:
    """The filter on results served by `versions` (names unique to one index; null for its base)."""
    named = [v for v in versions if v is not None]
    tag = index_of(db).base_tag
    if None not in versions:
        return {"model_version": {"$in": named}} if len(named) != 1 else {"model_version": named[0]}
    if not tag:
        return {"model_version": {"$in": list(versions)}} if len(versions) != 1 else {"model_version": None}
    base = {"model_version": None, **tag}
    return {"$or": [{"model_version": {"$in": named}}, base]} if named else base


def live_counts(db: Db, version: str | None, since: datetime) -> dict[str, Any]:
    """Results served by `version` since `since`, and the likes and dislikes users gave them."""

    def count(**extra: Any) -> int:
        return db[INFERENCES].count_documents({**served_by(db, [version]), **extra, "created_at": {"$gte": since}})

    likes, dislikes = count(feedback="like"), count(feedback="dislike")
    return {
        "version": version,
        "since": since,
        "served": count(),
        "feedback": likes + dislikes,
        "likes": likes,
    }


def served_count(db: Db, version: str | None, since: datetime, between: Callable[[], object] | None = None) -> int:
    """Results served by `version` since `since`: one index range, streamed so that `between` (a lease's
    renewal) is called every 10,000 results."""
    found = {**served_by(db, [version]), "created_at": {"$gte": since}}
    if between is None:
        return db[INFERENCES].count_documents(found)
    n = 0
    for _ in db[INFERENCES].find(found, {"_id": 1}, batch_size=10_000):
        n += 1
        if n % 10_000 == 0:
            between()
    return n


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
    results: list[Any] = field(default_factory=list)  # every result of the search (`_id`s)


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def impressions(db: Db, compared: Sequence[str | None], since: datetime) -> list[ImpressionRow]:
    """Searches since `since` whose results of `compared` versions drew feedback: per version the likes
    and dislikes, every version that served a result in it, and the user who searched (if known)."""
    reacted = db[INFERENCES].aggregate([
        {"$match": {**served_by(db, compared), "feedback": {"$in": ["like", "dislike"]},
                    "created_at": {"$gte": since}}},
        {"$group": {"_id": "$query_id"}},
    ])  # fmt: skip
    return impression_rows(db, compared, [doc["_id"] for doc in reacted], since)


def reacted_searches(db: Db, compared: Sequence[str | None], since: datetime) -> Iterator[Any]:
    """The searches `impressions` reads, streamed in batches (each once): a caller can renew a lease
    between them."""
    seen: set[Any] = set()
    found = {**served_by(db, compared), "feedback": {"$in": ["like", "dislike"]},
             "created_at": {"$gte": since}}  # fmt: skip
    for doc in db[INFERENCES].find(found, {"query_id": 1, "_id": 0}, batch_size=CHUNK):
        query = doc.get("query_id")
        if query not in seen:
            seen.add(query)
            yield query


def impression_rows(
    db: Db, compared: Sequence[str | None], query_ids: Sequence[Any], since: datetime
) -> list[ImpressionRow]:
    """`impressions` for the searches `query_ids` alone (those without feedback on `compared` versions
    since `since` are left out): reads their results and their users, a thousand searches per command."""
    rows: dict[Any, ImpressionRow] = {}
    index = index_of(db)
    for chunk in _chunks(list(query_ids)):
        found = {"query_id": {"$in": chunk}}
        fields = {"query_id": 1, "model_version": 1, "feedback": 1, "created_at": 1, "index": 1}
        served: dict[Any, set[str | None]] = {}
        results: dict[Any, list[Any]] = {}
        for doc in db[INFERENCES].find(found, fields):
            query, version = doc.get("query_id"), doc.get("model_version")
            if not index.serves(doc):
                continue  # another index's base model served it: not this index's impression
            served.setdefault(query, set()).add(version)
            results.setdefault(query, []).append(doc["_id"])
            reaction = doc.get("feedback")
            if version in compared and reaction in ("like", "dislike") and _on_or_after(doc, since):
                row = rows.setdefault(query, ImpressionRow(query))
                side = row.likes if reaction == "like" else row.dislikes
                side[version] = side.get(version, 0) + 1
        for query in [q for q in chunk if q in rows]:
            rows[query].served, rows[query].results = served.get(query, set()), results.get(query, [])
        for doc in db[USER_QUERIES].find({"_id": {"$in": [q for q in chunk if q in rows]}}, {"user_id": 1}):
            user = doc.get("user_id")
            rows[doc["_id"]].user_id = None if user is None or user == "" else str(user)
    return list(rows.values())


def _on_or_after(doc: dict[str, Any], since: datetime) -> bool:
    created = doc.get("created_at")
    return isinstance(created, datetime) and as_utc(created) >= as_utc(since)


def record_guard_decision(db: Db, version: str, decision: dict[str, Any]) -> None:
    """Keep a rollback decision's figures on the version it demoted (one entry per decision)."""
    entry = {**decision, "at": now()}
    db[MODEL_VERSIONS].update_one(
        {"version": version}, {"$set": {"guard_decision": entry}, "$push": {"guard_decisions": entry}}
    )


GUARD_STATE_ID = "online-guard"


def note_dropped(db: Db, reason: str) -> None:
    """Count a guard decision dropped because what it judged changed before it could be applied (in
    `producer_state`, `_id: "online-guard"`)."""
    entry = {"reason": reason, "at": server_now(db)}
    db[PRODUCER_STATE].update_one(
        {"_id": GUARD_STATE_ID}, {"$inc": {"dropped_decisions": 1}, "$set": {"last_dropped": entry}}, upsert=True
    )
