"""Counting feedback: the producer's trigger windows and watermark, each a range of one index.

Each count is of the feedback the database's index owns (`claimed`: all of it for an index that claims
everything, the default one alone).

A window ends at `until`, the database server's now: feedback dated later (an API host whose clock is
ahead) is not counted until the server's time reaches it, so it can neither trigger a job early nor,
sitting beyond every watermark, trigger one after another (`count_future_dated` reports it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eduranker.indexes import Claim
from eduranker.records import LABELS
from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES
from eduranker.store.types import Db, index_of


def claimed(claim: Claim) -> list[dict[str, Any]]:
    """Aggregation stages keeping the inferences an index's claim owns: each joined to its search (`q`)
    and its result (`r`), only where the claim names their fields, then matched (eduranker/indexes.py).
    A join costs one indexed lookup an inference: an index that owns all feedback needs none."""
    stages: list[dict[str, Any]] = []
    for source, collection, local, prefix in (("query", USER_QUERIES, "query_id", "q"),
                                              ("resource", RESOURCES, "resource_id", "r")):  # fmt: skip
        names = claim.fields(source)
        if names:
            stages.append({"$lookup": {"from": collection, "localField": local, "foreignField": "_id",
                                       "pipeline": [{"$project": dict.fromkeys(names, 1)}], "as": prefix}})  # fmt: skip
    return [*stages, {"$match": claim.match()}] if stages else []


def _count(db: Db, query: dict[str, Any], limit: int | None) -> int:
    """Inferences matching `query` that `db`'s index owns, at most `limit`."""
    claim = index_of(db).claim
    collection = db[INFERENCES]
    if claim.everything:  # pymongo turns `limit` into a $limit stage, which must not be 0: none is no argument
        return collection.count_documents(query, limit=limit) if limit else collection.count_documents(query)
    stages = [{"$match": query}, *claimed(claim), *([{"$limit": limit}] if limit else []), {"$count": "n"}]
    found = list(collection.aggregate(stages))
    return int(found[0]["n"]) if found else 0


def _set_when(label: str, when: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(filter, time field) pairs for feedback `label` set at `when`: by feedback_at, or by created_at for
    inserts without one. Each filter fixes the label first, so it is one range of the `feedback_window`
    index."""
    return [
        ({"feedback": label, "feedback_at": when}, "feedback_at"),
        ({"feedback": label, "feedback_at": None, "created_at": when}, "created_at"),
    ]


def _range(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["$gt"] = since
    if until is not None:
        bounds["$lte"] = until
    return bounds


def _window(label: str, since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Filters for feedback `label` set after `since` (all of it without one) and not after `until`."""
    if since is None and until is None:
        return [{"feedback": label}]
    dated = [query for query, _ in _set_when(label, _range(since, until))]
    if since is None:  # all of it: feedback carrying neither time cannot be from the future either
        dated.append({"feedback": label, "feedback_at": None, "created_at": None})
    return dated


def count_labels(
    db: Db, since: datetime | None = None, *, cap: int | None = None, until: datetime | None = None
) -> dict[str, int]:
    """Likes and dislikes currently in `inferences`: labels, one per reacted-to result, not the
    deduplicated training pairs a snapshot makes of them (optionally only those set after `since`, and
    with `until`, not after it).

    With `cap`, counting stops once the two together reach it: enough to answer "at least cap?" at a
    cost bounded by the cap rather than by the backlog.
    """
    counts = {"like": 0, "dislike": 0}
    for label in LABELS:
        for query in _window(label, since, until):
            left = None if cap is None else cap - sum(counts.values())
            if left is not None and left <= 0:
                return counts
            counts[label] += _count(db, query, left)
    return counts


def latest_feedback_at(db: Db, since: datetime | None = None, until: datetime | None = None) -> datetime | None:
    """When the newest usable feedback was set (created_at for an insert without feedback_at), not
    after `until`.

    With `since` (the last watermark) only that window is searched: the answer is the same whenever
    the window holds feedback, and a server that sorts without the index reads only the window.
    """
    after = _range(since, until) if since is not None or until is not None else {"$type": "date"}
    newest = None
    claim = index_of(db).claim
    for label in LABELS:
        for query, key in _set_when(label, after):
            if claim.everything:
                doc = db[INFERENCES].find_one(query, {key: 1}, sort=[(key, -1)])
            else:  # newest first, joined until one is the index's own
                stages = [
                    {"$match": query},
                    {"$sort": {key: -1}},
                    *claimed(claim),
                    {"$limit": 1},
                    {"$project": {key: 1}},
                ]
                doc = next(iter(db[INFERENCES].aggregate(stages)), None)
            if doc is not None and (newest is None or doc[key] > newest):
                newest = doc[key]
    return newest


def count_future_dated(db: Db, now: datetime) -> int:
    """Usable feedback dated after `now` (the server's): what a skewed API host wrote."""
    return sum(_count(db, query, None) for label in LABELS for query, _ in _set_when(label, {"$gt": now}))
