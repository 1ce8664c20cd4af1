"""The rows a training snapshot is built from: inferences with feedback, joined to their texts.

Inferences stream in batches. Query and resource texts are cut server-side to `max_text_chars`, so a
megabyte text never travels, and no inference costs a query of its own: a text collection of up to
CACHE_LIMIT documents is read once, whole; a larger one one `$in` query per batch, cached up to the limit.

Only the rows the database's index owns are kept (its claim, eduranker/indexes.py, read on the texts'
documents): another index's feedback is never a row of this one's snapshot.

`iter_feedback_rows` reads every inference with feedback, in no order. `FeedbackReader.newest_first`
reads them newest first, by feedback time, in windows of time that each are one range of an index, so
a job can stop once it has what its caps can use and never touches older feedback; `without_time`
reads what that order cannot place (`eduranker/pipeline/bounds.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING

from eduranker.indexes import Claim
from eduranker.records import LABELS
from eduranker.store.clock import as_utc
from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES
from eduranker.store.types import Db, Document, index_of

# Any inference a user reacted to, malformed values included, so the snapshot can count them.
FEEDBACK_PRESENT: dict[str, Any] = {"feedback": {"$exists": True, "$ne": None}}
INFERENCE_FIELDS = {"query_id": 1, "resource_id": 1, "feedback": 1, "feedback_at": 1, "created_at": 1}
CACHE_LIMIT = 50_000  # texts held at once: at most this many × max_text_chars characters

# The newest-first read. A feedback's time is `feedback_at`, or `created_at` for an insert that carries
# feedback without `feedback_at` (as the producer counts it). A window of time [lo, hi) is three queries,
# each one range of an index, newest first: `feedback_at` in the range (`feedback_newest`), and each label
# without `feedback_at` by `created_at` (`feedback_window`). Its rows are merged newest first (ties by
# inference id). The next window's span is set from the last one's density to hold about WINDOW_ROWS
# inferences; an empty window doubles it, and the windows end, past FLOOR, with one of everything older.
# Each query returns at most 4 × WINDOW_ROWS inferences: a window that reaches that (the first one to
# reach feedback after a quiet spell) keeps only the rows that are all there and goes on from them.
WINDOW_ROWS = 5_000
FIRST_SPAN = timedelta(hours=1)
MILLISECOND = timedelta(milliseconds=1)  # a BSON date's resolution
FLOOR = datetime(1970, 1, 1, tzinfo=UTC)
NEWEST_FIRST = [("feedback_at", DESCENDING), ("_id", DESCENDING)]
CREATED_NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]
# Feedback that no window holds: a `feedback_at` of another type than a date, a label without
# `feedback_at` and without a date in `created_at`, and malformed labels without `feedback_at`.
WITHOUT_TIME: dict[str, Any] = {
    **FEEDBACK_PRESENT,
    "feedback_at": {"$not": {"$type": "date"}},
    "$nor": [{"feedback": {"$in": list(LABELS)}, "feedback_at": None, "created_at": {"$type": "date"}}],
}


def _clipped(path: str, max_chars: int) -> dict[str, Any]:
    # Strings are cut server-side; other types arrive as null, their BSON type name beside them.
    return {"$cond": [{"$eq": [{"$type": path}, "string"]}, {"$substrCP": [path, 0, max_chars]}, None]}


def _short_label(path: str) -> dict[str, Any]:
    # A scalar as text of at most 200 characters; any other type is null.
    scalar = {"$in": [{"$type": path}, ["string", "int", "long", "double", "objectId"]]}
    return {"$cond": [scalar, {"$substrCP": [{"$toString": path}, 0, 200]}, None]}


def _length(path: str) -> dict[str, Any]:
    return {"$cond": [{"$eq": [{"$type": path}, "string"]}, {"$strLenCP": path}, 0]}


def _label(path: str) -> dict[str, Any]:
    # A slice label: a string or number, as a string of at most 100 characters; anything else is none.
    scalar = {"$in": [{"$type": path}, ["string", "int", "long", "double"]]}
    return {"$cond": [scalar, {"$substrCP": [{"$toString": path}, 0, 100]}, None]}


def _text_fields(fields: Iterable[str], max_chars: int) -> dict[str, Any]:
    projection: dict[str, Any] = {}
    for name in fields:
        projection[name] = _clipped(f"${name}", max_chars)
        projection[f"{name}_type"] = {"$type": f"${name}"}
        projection[f"{name}_length"] = _length(f"${name}")
    return projection


def _fetch(db: Db, collection: str, ids: set[Any], projection: dict[str, Any]) -> dict[Any, Document]:
    pipeline = [{"$match": {"_id": {"$in": list(ids)}}}, {"$project": projection}]
    return {doc["_id"]: doc for doc in db[collection].aggregate(pipeline)}


class _Texts:
    """Projected text documents by id. A collection of at most CACHE_LIMIT documents is read whole,
    once, in one stream (far cheaper than `$in` lists on some servers); a larger one a batch at a time."""

    def __init__(
        self, db: Db, collection: str, fields: tuple[str, ...], max_chars: int, slice_field: str = "",
        extra: dict[str, Any] | None = None,
    ):  # fmt: skip
        self.db, self.collection, self.fields, self.max_chars = db, collection, fields, max_chars
        self.claim = index_of(db).claim
        self.projection = {**_text_fields(fields, max_chars), **(extra or {})}
        if slice_field:  # a short label (e.g. the resource's subject), cut like the texts
            self.projection["slice"] = _label(f"${slice_field}")
        self.known: dict[Any, Document | None] = {}
        self.whole = db[collection].estimated_document_count() <= CACHE_LIMIT
        if self.whole:
            pipeline = [{"$project": self.projection}]
            self.known = {doc["_id"]: doc for doc in db[collection].aggregate(pipeline)}

    def load(self, ids: Iterable[Any]) -> None:
        # Only ObjectIds can be valid references (anything else is skipped as an invalid id). With the
        # collection read whole, only dangling ids and texts written since are asked for.
        wanted = {i for i in ids if isinstance(i, ObjectId) and i not in self.known}
        if not wanted:
            return
        if not self.whole and len(self.known) + len(wanted) > CACHE_LIMIT:
            self.known.clear()
        found = _fetch(self.db, self.collection, wanted, self.projection)
        for i in wanted:
            self.known[i] = found.get(i)

    def get(self, i: Any) -> Document | None:
        return self.known.get(i) if isinstance(i, ObjectId) else None


def _row(inference: Document, query: Document | None, resource: Document | None) -> dict[str, Any]:
    q, r = query or {}, resource or {}
    return {
        **inference,
        "query_found": query is not None,
        "resource_found": resource is not None,
        "query_text": q.get("query_text"),
        "user_id": q.get("user_id"),
        "query_text_type": q.get("query_text_type", "missing"),
        "query_text_length": q.get("query_text_length", 0),
        "title": r.get("title"),
        "title_type": r.get("title_type", "missing"),
        "description": r.get("description"),
        "description_type": r.get("description_type", "missing"),
        "slice": r.get("slice"),
        "document_length": r.get("title_length", 0) + r.get("description_length", 0),
    }


def _claim_fields(claim: Claim, source: str) -> dict[str, Any]:
    # The fields the index's claim names, under `claim`, for `_joined` to keep the index's own rows.
    names = claim.fields(source)
    return {"claim": {name: f"${name}" for name in names}} if names else {}


def _text_caches(db: Db, max_text_chars: int, slice_field: str) -> tuple[_Texts, _Texts]:
    # user_id: whose reaction it is, for the per-user cap (eduranker/pipeline/caps.py).
    claim = index_of(db).claim
    queries = _Texts(db, USER_QUERIES, ("query_text",), max_text_chars,
                     extra={"user_id": _short_label("$user_id"), **_claim_fields(claim, "query")})  # fmt: skip
    resources = _Texts(db, RESOURCES, ("title", "description"), max_text_chars, slice_field,
                       extra=_claim_fields(claim, "resource"))  # fmt: skip
    return queries, resources


def iter_feedback_rows(
    db: Db, max_text_chars: int, batch_size: int = 2000, slice_field: str = ""
) -> Iterator[dict[str, Any]]:
    """Stream joined rows; memory stays bounded by the batch size, the text cache and the clip.
    `slice_field`: the resource field whose value is each row's `slice` (none when empty)."""
    queries, resources = _text_caches(db, max_text_chars, slice_field)
    with db[INFERENCES].find(FEEDBACK_PRESENT, INFERENCE_FIELDS, batch_size=batch_size) as cursor:
        yield from _streamed(cursor, batch_size, queries, resources)


def _streamed(
    inferences: Iterable[Document], batch_size: int, queries: _Texts, resources: _Texts
) -> Iterator[dict[str, Any]]:
    batch: list[Document] = []
    for inference in inferences:
        batch.append(inference)
        if len(batch) == batch_size:
            yield from _joined(batch, queries, resources)
            batch = []
    yield from _joined(batch, queries, resources)


def _claimed_by(claim: Claim, query: Document | None, resource: Document | None) -> bool:
    if claim.everything:
        return True
    return claim.holds(None if query is None else query.get("claim", {}),
                       None if resource is None else resource.get("claim", {}))  # fmt: skip


def _time_of(inference: Document) -> datetime:
    """The time a window places an inference by: `feedback_at`, else (an insert without it) `created_at`."""
    when = inference.get("feedback_at")
    return as_utc(when if isinstance(when, datetime) else inference["created_at"])


def _between(lo: datetime | None, hi: datetime | None) -> Any:
    # Dates only: a comparison with a date matches no other BSON type.
    bounds = {"$gte": lo, "$lt": hi}
    return {op: value for op, value in bounds.items() if value is not None} or {"$type": "date"}


def _window_queries(when: Any) -> list[tuple[dict[str, Any], list[tuple[str, int]]]]:
    """(filter, order) of each query for feedback set `when` (a range, or one instant)."""
    undated = [({"feedback": label, "feedback_at": None, "created_at": when}, CREATED_NEWEST_FIRST) for label in LABELS]
    return [({"feedback_at": when}, NEWEST_FIRST), *undated]


def _newest_first(found: list[Document]) -> list[Document]:
    # Feedback removed with its time left behind is no reaction.
    kept = [doc for doc in found if doc.get("feedback") is not None]
    kept.sort(key=lambda doc: (_time_of(doc), str(doc["_id"])), reverse=True)
    return kept


def _next_span(span: timedelta, rows: int, target: int) -> timedelta:
    factor = min(4.0, target / rows) if rows else 2.0
    return max(span * max(factor, 0.125), MILLISECOND)


class FeedbackReader:
    """Joined rows of the inferences with feedback, newest first; texts cached as `iter_feedback_rows`
    caches them. `windows` counts the windows of time read so far."""

    def __init__(self, db: Db, max_text_chars: int, batch_size: int = 2000, slice_field: str = ""):
        self.db, self.batch_size = db, batch_size
        self.queries, self.resources = _text_caches(db, max_text_chars, slice_field)
        self.windows = 0

    def window(self, lo: datetime | None, hi: datetime | None, limit: int) -> tuple[list[Document], datetime | None]:
        """The inferences with feedback set in [lo, hi) (None: unbounded), newest first, and None; or,
        when a query returned `limit` inferences, those set after the oldest time it reached (all there),
        and the time to go on from (exclusive): the window was cut short."""
        found: list[Document] = []
        cut: datetime | None = None
        for query, order in _window_queries(_between(lo, hi)):
            docs = list(self.db[INFERENCES].find(query, INFERENCE_FIELDS, sort=order, limit=limit))
            if len(docs) >= limit:
                oldest = _time_of(docs[-1])
                cut = oldest if cut is None else max(cut, oldest)
            found += docs
        if cut is None:
            return _newest_first(found), None
        after = [doc for doc in found if _time_of(doc) > cut]
        if after:
            return _newest_first(after), cut + MILLISECOND
        # More than `limit` at one instant: that instant, whole.
        instant: list[Document] = []
        for query, order in _window_queries(cut):
            instant += self.db[INFERENCES].find(query, INFERENCE_FIELDS, sort=order)
        return _newest_first(instant), cut

    def newest_first(self, now: datetime, window_rows: int = WINDOW_ROWS) -> Iterator[dict[str, Any]]:
        """Every inference with feedback whose time is a date, newest first; the first window also holds
        feedback dated after `now`. Stop iterating to stop reading: nothing older is asked for."""
        hi: datetime | None = None
        span = FIRST_SPAN
        while True:
            top = hi or now
            lo = top - span if top - FLOOR > span else None
            found, resume = self.window(lo, hi, limit=4 * window_rows)
            self.windows += 1
            yield from _streamed(found, self.batch_size, self.queries, self.resources)
            if resume is not None:  # cut short: go on from where it stopped, at the density it found
                span, hi = max((top - resume) * window_rows / max(len(found), 1), MILLISECOND), resume
            elif lo is None:
                return
            else:
                span, hi = _next_span(span, len(found), window_rows), lo

    def without_time(self) -> Iterator[dict[str, Any]]:
        """The inferences with feedback that `newest_first` never reads, in no order (bad data)."""
        with self.db[INFERENCES].find(WITHOUT_TIME, INFERENCE_FIELDS, batch_size=self.batch_size) as cursor:
            yield from _streamed(cursor, self.batch_size, self.queries, self.resources)


def _joined(batch: list[Document], queries: _Texts, resources: _Texts) -> Iterator[dict[str, Any]]:
    queries.load(i.get("query_id") for i in batch)
    resources.load(i.get("resource_id") for i in batch)
    for inference in batch:
        query, resource = queries.get(inference.get("query_id")), resources.get(inference.get("resource_id"))
        if _claimed_by(queries.claim, query, resource):  # another index's feedback is not this one's to count
            yield _row(inference, query, resource)
