"""Resources by id, for a reranking request that names its candidates by id (`eduranker serve
--resources-from-mongodb`): the fields a document's text is built from, as the snapshot reads them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from eduranker.store.connection import RESOURCES
from eduranker.store.types import Db


def resource_fields(db: Db, ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """`title` and `description` of each resource, aligned with `ids` (None: no such resource, or an id
    that is not an ObjectId's 24 hex digits). One query for the request."""
    parsed: list[ObjectId | None] = []
    for text in ids:
        try:
            parsed.append(ObjectId(text))
        except (InvalidId, TypeError):
            parsed.append(None)
    wanted = [i for i in parsed if i is not None]
    found = {doc["_id"]: doc for doc in db[RESOURCES].find({"_id": {"$in": wanted}}, {"title": 1, "description": 1})}
    return [found.get(i) if i is not None else None for i in parsed]
