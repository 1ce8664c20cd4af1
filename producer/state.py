"""The producer's own document in `producer_state`: resume token, last counts, last decision."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from eduranker.store.connection import PRODUCER_STATE
from eduranker.store.jobs import now

STATE_ID = "producer"


def load_state(db: Database) -> dict[str, Any]:
    return db[PRODUCER_STATE].find_one({"_id": STATE_ID}) or {"_id": STATE_ID}


def save_state(db: Database, **fields: Any) -> None:
    db[PRODUCER_STATE].update_one({"_id": STATE_ID}, {"$set": {**fields, "updated_at": now()}}, upsert=True)
