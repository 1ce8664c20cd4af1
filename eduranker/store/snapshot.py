"""The rows a training snapshot is built from: inferences with feedback, joined to their texts.

Inferences stream in batches. Query and resource texts are cut server-side to `max_text_chars`, so a
megabyte text never travels, and no inference costs a query of its own: a text collection of up to
CACHE_LIMIT documents is read once, whole; a larger one one `$in` query per batch, cached up to the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from bson import ObjectId

from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES
from eduranker.store.types import Db, Document

# Any inference a user reacted to, malformed values included, so the snapshot can count them.
FEEDBACK_PRESENT: dict[str, Any] = {"feedback": {"$exists": True, "$ne": None}}
INFERENCE_FIELDS = {"query_id": 1, "resource_id": 1, "feedback": 1, "feedback_at": 1, "created_at": 1}
CACHE_LIMIT = 50_000  # texts held at once: at most this many × max_text_chars characters


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


def iter_feedback_rows(
    db: Db, max_text_chars: int, batch_size: int = 2000, slice_field: str = ""
) -> Iterator[dict[str, Any]]:
    """Stream joined rows; memory stays bounded by the batch size, the text cache and the clip.
    `slice_field`: the resource field whose value is each row's `slice` (none when empty)."""
    # user_id: whose reaction it is, for the per-user cap (eduranker/pipeline/caps.py).
    queries = _Texts(db, USER_QUERIES, ("query_text",), max_text_chars, extra={"user_id": _short_label("$user_id")})
    resources = _Texts(db, RESOURCES, ("title", "description"), max_text_chars, slice_field)
    with db[INFERENCES].find(FEEDBACK_PRESENT, INFERENCE_FIELDS, batch_size=batch_size) as cursor:
        batch: list[Document] = []
        for inference in cursor:
            batch.append(inference)
            if len(batch) == batch_size:
                yield from _joined(batch, queries, resources)
                batch = []
        yield from _joined(batch, queries, resources)


def _joined(batch: list[Document], queries: _Texts, resources: _Texts) -> Iterator[dict[str, Any]]:
    queries.load(i.get("query_id") for i in batch)
    resources.load(i.get("resource_id") for i in batch)
    for inference in batch:
        yield _row(inference, queries.get(inference.get("query_id")), resources.get(inference.get("resource_id")))
