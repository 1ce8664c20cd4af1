"""The types every store function speaks: a MongoDB document, and the database as one index sees it.

`IndexDb` is a pymongo `Database` bound to one search index (eduranker/indexes.py): `db["training_jobs"]`
is that index's own collection (`training_jobs` for the default index, `fr.training_jobs` for index
`fr`: MongoDB's namespace convention, as GridFS's `fs.files`), so every record the trainer owns (jobs,
versions, the champion record, counters, producer state, epochs, figures) is the index's by
construction, and each unique index holds per index. The feedback collections the search API writes
(`inferences`, `user_queries`, `resources`) are shared: what an index reads of them is filtered by its
claim (`db.index.claim`, applied in eduranker/store/feedback.py and snapshot.py).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from eduranker.indexes import DEFAULT_INDEX, Index

Document: TypeAlias = dict[str, Any]
# The collections of the search API, shared by every index.
SHARED = frozenset({"inferences", "user_queries", "resources"})


class IndexDb(Database[Document]):
    """The trainer's database as index `index` sees it: its own records, the shared feedback."""

    def __init__(self, client: MongoClient[Document], name: str, index: Index, **options: Any):
        super().__init__(client, name, **options)
        self.index = index

    def __getitem__(self, name: str) -> Collection[Document]:
        return Collection(self, name if name in SHARED else self.index.collection(name))

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> Collection[Document]:
        return super().get_collection(name if name in SHARED else self.index.collection(name), *args, **kwargs)


Db: TypeAlias = Database[Document]


def index_of(db: Db) -> Index:
    """The index `db` is bound to; a plain `Database` is the default index's (today's names)."""
    return db.index if isinstance(db, IndexDb) else DEFAULT_INDEX


def for_index(db: Db, index: Index) -> IndexDb:
    """The same database and client, bound to another index (the producer's per-index views)."""
    return IndexDb(db.client, db.name, index)
