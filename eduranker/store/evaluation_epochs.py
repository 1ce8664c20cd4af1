"""Evaluation epochs: the (key, test fraction) that fixes every query's side of the held-out split.

One document per epoch in `evaluation_epochs`, `_id` the epoch number, written once and never changed.
The newest is in force. A job whose settings ask for another fraction or another key starts the next
epoch (an insert on the next number: of two racing jobs one wins and the other reads its epoch), so a
query keeps its side for as long as the epoch lasts, across every job and every worker.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from eduranker.store.types import Db

EVALUATION_EPOCHS = "evaluation_epochs"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    key: str  # hex
    test_fraction: float
    started_by: str


def latest_epoch(db: Db) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({}, sort=[("_id", DESCENDING)])
    if doc is None:
        return None
    return EpochRecord(int(doc["_id"]), str(doc["key"]), float(doc["test_fraction"]), str(doc.get("started_by")))


def get_epoch(db: Db, epoch: int) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({"_id": epoch})
    if doc is None:
        return None
    return EpochRecord(int(doc["_id"]), str(doc["key"]), float(doc["test_fraction"]), str(doc.get("started_by")))


def _matches(record: EpochRecord, test_fraction: float, key: str) -> bool:
    return record.test_fraction == test_fraction and (not key or record.key == key.lower())


def current_epoch(db: Db, test_fraction: float, key: str = "", *, by: str) -> EpochRecord:
    """The epoch in force for these settings, starting a new one when the fraction or a set key differs
    from the newest recorded. `key` empty: keep the recorded key (a fresh random one for the first epoch)."""
    while True:
        latest = latest_epoch(db)
        if latest is not None and _matches(latest, test_fraction, key):
            return latest
        number = 1 if latest is None else latest.epoch + 1
        new_key = key.lower() or (latest.key if latest is not None else secrets.token_hex(32))
        doc = {"_id": number, "key": new_key, "test_fraction": test_fraction, "started_by": by}
        try:
            db[EVALUATION_EPOCHS].insert_one(doc)
        except DuplicateKeyError:
            continue  # another job started this epoch first: read it (and check it fits these settings)
        return EpochRecord(number, new_key, test_fraction, by)
