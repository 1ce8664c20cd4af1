"""Evaluation epochs: the (key, test fraction) that fixes every query's side of the held-out split.

One document per epoch in `evaluation_epochs`, `_id` the epoch number, written once and never changed.
The newest is in force. A job whose settings ask for another fraction or another key starts the next
epoch (an insert on the next number: of two racing jobs one wins and the other reads its epoch), so a
query keeps its side for as long as the epoch lasts, across every job and every worker. An epoch also
records the version of the query key its split hashes (`eduranker/pipeline/text.py`): one recorded
before there were versions reads as version 1, and keeps it for as long as it lasts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

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
    query_key_version: int = 1  # an epoch recorded without one hashed version 1's keys


def _record(doc: dict[str, Any]) -> EpochRecord:
    return EpochRecord(int(doc["_id"]), str(doc["key"]), float(doc["test_fraction"]), str(doc.get("started_by")),
                       int(doc.get("query_key_version", 1)))  # fmt: skip


def latest_epoch(db: Db) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({}, sort=[("_id", DESCENDING)])
    return None if doc is None else _record(doc)


def get_epoch(db: Db, epoch: int) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({"_id": epoch})
    return None if doc is None else _record(doc)


def _matches(record: EpochRecord, test_fraction: float, key: str) -> bool:
    return record.test_fraction == test_fraction and (not key or record.key == key.lower())


def current_epoch(db: Db, test_fraction: float, key: str = "", *, by: str, query_key_version: int = 1) -> EpochRecord:
    """The epoch in force for these settings, starting a new one when the fraction or a set key differs
    from the newest recorded. `key` empty: keep the recorded key (a fresh random one for the first epoch).
    A new epoch records `query_key_version`; an epoch in force keeps its own (never a reason for a new one)."""
    while True:
        latest = latest_epoch(db)
        if latest is not None and _matches(latest, test_fraction, key):
            return latest
        number = 1 if latest is None else latest.epoch + 1
        new_key = key.lower() or (latest.key if latest is not None else secrets.token_hex(32))
        doc = {"_id": number, "key": new_key, "test_fraction": test_fraction, "started_by": by,
               "query_key_version": query_key_version}  # fmt: skip
        try:
            db[EVALUATION_EPOCHS].insert_one(doc)
        except DuplicateKeyError:
            continue  # another job started this epoch first: read it (and check it fits these settings)
        return EpochRecord(number, new_key, test_fraction, by, query_key_version)
