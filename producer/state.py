"""The producer's own document in `producer_state`: resume token, last counts, last decision."""

from __future__ import annotations

from typing import Any

from eduranker.store.clock import SERVER_NOW, literal
from eduranker.store.connection import PRODUCER_STATE
from eduranker.store.types import Db

STATE_ID = "producer"


def load_state(db: Db) -> dict[str, Any]:
    return db[PRODUCER_STATE].find_one({"_id": STATE_ID}) or {"_id": STATE_ID}


def save_state(db: Db, **fields: Any) -> None:
    # updated_at is the server's: `eduranker status` and a standby compare it with the server's now.
    update = [{"$set": {**literal(fields), "updated_at": SERVER_NOW}}]
    db[PRODUCER_STATE].update_one({"_id": STATE_ID}, update, upsert=True)
