"""Running sums of a live comparison of two versions, kept from a change-stream position.

Three collections, all keyed by the comparison (`key`, e.g. "v0003 vs v0002") and the build that made
them (`build`: a full recomputation writes a new build beside the old one and switches to it in one
write, so a build that stops half way leaves nothing a reader sees):

- `online_comparisons`: one document per comparison: the versions, `since`, the build, the change
  stream's `token` the sums are exact up to, `batches` (bumped by every batch: a batch written on a
  stale read changes nothing) and the totals.
- `online_impressions`: one per search with a contribution: its cluster, its last contribution `x`, and
  its results (`results`, so a deleted result finds its search).
- `online_clusters`: one per cluster: the sums of its searches' contributions.

A batch (the last contributions of some searches replaced by their new ones, the clusters' sums moved
by the difference, the token moved on) is one transaction, fenced by the lease when a fence is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DeleteOne, InsertOne, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.errors import OperationFailure

from eduranker.errors import EduRankerError
from eduranker.indexes import Index
from eduranker.store.clock import as_utc, server_now
from eduranker.store.connection import INFERENCES, ensure_index
from eduranker.store.lease import LeaseFence, fenced
from eduranker.store.types import Db, Document, index_of

COMPARISONS, IMPRESSIONS, CLUSTERS = "online_comparisons", "online_impressions", "online_clusters"
T = TypeVar("T")
# The events that can change a search's contribution: inserts (those without feedback only count as
# served), updates that set or remove feedback, replaces and deletes.
CHANGES: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert"},
                {"operationType": "update", "updateDescription.updatedFields.feedback": {"$exists": True}},
                {"operationType": "update", "updateDescription.removedFields": "feedback"},
                {"operationType": {"$in": ["replace", "delete"]}},
            ]
        }
    }
]
RESUME_FAILED_CODES = {9, 260, 280, 286}  # the server no longer has (or refuses) the position


class SumsMoved(EduRankerError):
    """Another writer moved the comparison's state since it was read: this batch wrote nothing."""


def ensure_sums_indexes(db: Db) -> None:
    ensure_index(db[IMPRESSIONS], [("key", ASCENDING), ("build", ASCENDING), ("q", ASCENDING)], "impression_sums",
                 unique=True)  # fmt: skip
    results = [("key", ASCENDING), ("build", ASCENDING), ("results", ASCENDING)]
    ensure_index(db[IMPRESSIONS], results, "impression_results")
    ensure_index(db[CLUSTERS], [("key", ASCENDING), ("build", ASCENDING), ("k", ASCENDING)], "cluster_sums",
                 unique=True)  # fmt: skip


@dataclass(frozen=True)
class State:
    key: str
    first: str
    second: str
    since: datetime
    build: str
    token: Mapping[str, Any] | None
    batches: int = 0
    totals: dict[str, int] = field(default_factory=dict)


def read_state(db: Db, key: str) -> State | None:
    doc = db[COMPARISONS].find_one({"_id": key})
    if doc is None or not doc.get("build"):
        return None
    return State(key, doc["first"], doc["second"], doc["since"], doc["build"], doc.get("token"),
                 int(doc.get("batches") or 0), dict(doc.get("totals") or {}))  # fmt: skip


def transaction(db: Db, fence: LeaseFence | None, write: Callable[[ClientSession], T]) -> T:
    """`write` in one transaction; with `fence`, only while that lease (and term) holds."""
    if fence is not None:
        return fenced(db, fence, write)
    with db.client.start_session() as session:
        return session.with_transaction(write)


def stream_position(db: Db) -> Mapping[str, Any] | None:
    """A change-stream position before anything read after this call (a full build's starting point)."""
    with db[INFERENCES].watch(CHANGES, max_await_time_ms=1) as stream:
        stream.try_next()
        return stream.resume_token


@dataclass
class Touched:
    """The searches a stretch of changes touched, and the position after them."""

    queries: set[Any] = field(default_factory=set)
    results: set[Any] = field(default_factory=set)  # updated results: their search is looked up
    deleted: set[Any] = field(default_factory=set)  # deleted results: their search is found by `results`
    served: dict[Any, int] = field(default_factory=dict)  # results inserted since `since`, per version
    events: int = 0
    token: Mapping[str, Any] | None = None
    caught_up: bool = False


def changes(db: Db, token: Mapping[str, Any], since: datetime, *, batch: int, limit: int) -> list[Touched]:
    """The changes since `token`, `batch` events to a stretch, at most `limit` stretches (the last one
    says whether it caught up). The stream is read to the end first and closed before anything is
    written. OperationFailure with a code in RESUME_FAILED_CODES when the position is gone."""
    out: list[Touched] = []
    with db[INFERENCES].watch(CHANGES, resume_after=token, max_await_time_ms=1, batch_size=batch) as stream:
        touched = Touched()
        while len(out) < limit:
            event = stream.try_next()
            if event is None:
                touched.token, touched.caught_up = stream.resume_token, True
                out.append(touched)
                break
            _note(touched, event, since, index_of(db))
            if touched.events >= batch:
                touched.token = stream.resume_token
                out.append(touched)
                touched = Touched()
    return out


def _note(touched: Touched, event: Document, since: datetime, index: Index) -> None:
    touched.events += 1
    kind, key = event["operationType"], event.get("documentKey", {}).get("_id")
    doc = event.get("fullDocument")
    if kind == "delete":
        touched.deleted.add(key)
    elif kind in ("insert", "replace") and doc is not None:
        if kind == "insert":
            created = doc.get("created_at")
            if isinstance(created, datetime) and as_utc(created) >= as_utc(since):
                version = doc.get("model_version")
                if index.serves(doc):  # not another index's base
                    touched.served[version] = touched.served.get(version, 0) + 1
            if doc.get("feedback") is None:
                return  # a result without a reaction changes no contribution
        touched.queries.add(doc.get("query_id"))
    else:
        touched.results.add(key)


def searches_of(db: Db, state: State, touched: Touched) -> set[Any]:
    """Every search the touched results belong to (a deleted result: the search that counted it)."""
    out = set(touched.queries)
    results = list(touched.results)
    for start in range(0, len(results), 1000):
        for doc in db[INFERENCES].find({"_id": {"$in": results[start : start + 1000]}}, {"query_id": 1}):
            out.add(doc.get("query_id"))
    deleted = list(touched.deleted)
    for start in range(0, len(deleted), 1000):
        found = {"key": state.key, "build": state.build, "results": {"$in": deleted[start : start + 1000]}}
        out.update(doc["q"] for doc in db[IMPRESSIONS].find(found, {"q": 1}))
    return out


@dataclass(frozen=True)
class Stored:
    cluster: str
    contribution: dict[str, int]


def stored(db: Db, state: State, queries: Sequence[Any]) -> dict[Any, Stored]:
    found = {"key": state.key, "build": state.build, "q": {"$in": list(queries)}}
    return {doc["q"]: Stored(doc["k"], dict(doc["x"])) for doc in db[IMPRESSIONS].find(found, {"q": 1, "k": 1, "x": 1})}


@dataclass(frozen=True)
class Change:
    """A search's new contribution (empty: it contributes nothing any more)."""

    query: Any
    cluster: str
    contribution: dict[str, int]
    results: list[Any]


def apply_batch(
    db: Db,
    state: State,
    changed: Sequence[Change],
    clusters: Mapping[str, Mapping[str, int]],
    totals: Mapping[str, int],
    token: Mapping[str, Any] | None,
    fence: LeaseFence | None,
) -> int:
    """Replace the searches' contributions, move the clusters' sums and the totals by their differences
    and the token on, all or nothing, only if the state is still the one read. Returns the batch number."""

    def write(session: ClientSession) -> int:
        moved = db[COMPARISONS].update_one(
            {"_id": state.key, "build": state.build, "batches": state.batches},
            {"$set": {"token": token, "updated_at": server_now(db)}, "$inc": {"batches": 1, **_prefixed(totals)}},
            session=session,
        )
        if moved.matched_count != 1:
            raise SumsMoved(f"comparison {state.key} moved on since it was read")
        base = {"key": state.key, "build": state.build}
        ops: list[Any] = []
        for c in changed:
            if c.contribution:
                doc = {"$set": {"k": c.cluster, "x": c.contribution, "results": c.results}}
                ops.append(UpdateOne({**base, "q": c.query}, doc, upsert=True))
            else:
                ops.append(DeleteOne({**base, "q": c.query}))
        if ops:
            db[IMPRESSIONS].bulk_write(ops, ordered=False, session=session)
        sums = [UpdateOne({**base, "k": k}, {"$inc": {f"s.{n}": v for n, v in d.items()}}, upsert=True)
                for k, d in clusters.items() if d]  # fmt: skip
        if sums:
            db[CLUSTERS].bulk_write(sums, ordered=False, session=session)
        return state.batches + 1

    return transaction(db, fence, write)


def _prefixed(totals: Mapping[str, int]) -> dict[str, int]:
    return {f"totals.{name}": value for name, value in totals.items() if value}


def write_build(
    db: Db,
    key: str,
    build: str,
    changed: Sequence[Change],
    clusters: Mapping[str, Mapping[str, int]],
    between: Callable[[], object] | None = None,
) -> None:
    """A full recomputation's documents under a new `build` (`new_build()`), not yet read by anyone.
    `between` (a lease's renewal) is called between the bulk writes."""
    base = {"key": key, "build": build}
    docs = [{**base, "q": c.query, "k": c.cluster, "x": c.contribution, "results": c.results} for c in changed]
    for start in range(0, len(docs), 5000):
        db[IMPRESSIONS].bulk_write([InsertOne(d) for d in docs[start : start + 5000]], ordered=False)
        if between is not None:
            between()
    rows = [{**base, "k": k, "s": dict(s)} for k, s in clusters.items()]
    for start in range(0, len(rows), 5000):
        db[CLUSTERS].bulk_write([InsertOne(d) for d in rows[start : start + 5000]], ordered=False)


def new_build() -> str:
    return uuid.uuid4().hex


def switch_build(
    db: Db, previous: State | None, key: str, first: str, second: str, since: datetime, build: str,
    token: Mapping[str, Any] | None, totals: Mapping[str, int], fence: LeaseFence | None, purpose: str,
) -> None:  # fmt: skip
    """Make `build` the comparison's sums (only if the state is still the one read), then remove every
    other build's documents of this comparison."""

    def write(session: ClientSession) -> None:
        found: dict[str, Any] = {"_id": key}
        found.update({"build": previous.build, "batches": previous.batches} if previous else {"build": None})
        at = server_now(db)
        doc = {"first": first, "second": second, "since": since, "build": build, "token": token, "batches": 0,
               "totals": dict(totals), "purpose": purpose, "built_at": at, "updated_at": at}  # fmt: skip
        try:
            result = db[COMPARISONS].update_one(found, {"$set": doc}, upsert=True, session=session)
        except OperationFailure as exc:  # the upsert met a document another writer created meanwhile
            raise SumsMoved(f"comparison {key} was built by another writer meanwhile") from exc
        if result.matched_count != 1 and result.upserted_id is None:
            raise SumsMoved(f"comparison {key} moved on since it was read")

    transaction(db, fence, write)
    forget_builds(db, key, keep=build)


def forget_build(db: Db, key: str, build: str) -> None:
    """Remove one build's documents (a build that was never switched to)."""
    for name in (IMPRESSIONS, CLUSTERS):
        db[name].delete_many({"key": key, "build": build})


def forget_builds(db: Db, key: str, *, keep: str | None) -> None:
    for name in (IMPRESSIONS, CLUSTERS):
        db[name].delete_many({"key": key, "build": {"$ne": keep}})


def forget_comparisons(db: Db, purpose: str, *, keep: str) -> None:
    """Remove the other comparisons made for `purpose` (a guard's comparison of an earlier champion)."""
    for doc in db[COMPARISONS].find({"purpose": purpose, "_id": {"$ne": keep}}, {"_id": 1}):
        forget_builds(db, doc["_id"], keep=None)
        db[COMPARISONS].delete_one({"_id": doc["_id"]})


def cluster_sums(db: Db, state: State) -> list[dict[str, int]]:
    """Every cluster's sums: costs the clusters, not the results."""
    found = {"key": state.key, "build": state.build}
    return [dict(doc.get("s") or {}) for doc in db[CLUSTERS].find(found, {"s": 1, "_id": 0})]
