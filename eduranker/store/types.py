"""The types every store function speaks: a MongoDB document and a database of them."""

from __future__ import annotations

from typing import Any, TypeAlias

from pymongo.database import Database

Document: TypeAlias = dict[str, Any]
Db: TypeAlias = Database[Document]
