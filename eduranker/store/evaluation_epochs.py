"""Evaluation epochs: the (key, test fraction) that fixes every query's side of the held-out split.

One document per epoch in `evaluation_epochs`, `_id` the epoch number, written once and never changed.
The newest is in force. A job whose settings ask for another fraction or another key starts the next
epoch (an insert on the next number: of two racing jobs one wins and the other reads its epoch), so a
query keeps its side for as long as the epoch lasts, across every job and every worker. An epoch also
records the version of the query key its split hashes (`eduranker/pipeline/text.py`): one recorded
before there were versions reads as version 1, and keeps it for as long as it lasts.

Checked, not trusted: every version records its epoch and its key's fingerprint (`split.epoch`,
`split.key_fingerprint`). An epoch that versions trained under but that is missing here, or holds
another key (the collection lost in a restore, then re-created by a job), would make the gate judge
pairs the champion trained on as unseen; `epoch_problem` names it and jobs stop until an operator starts
a new epoch on purpose (`start_epoch`, `eduranker new-epoch`), after which the older epochs count as
unknown (the gate says the champion may have seen any held-out pair).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from eduranker.store.connection import MODEL_VERSIONS
from eduranker.store.types import Db

EVALUATION_EPOCHS = "evaluation_epochs"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    key: str  # hex
    test_fraction: float
    started_by: str
    on_purpose: bool = False  # started by an operator: the epochs before it may be lost or changed
    query_key_version: int = 1  # an epoch recorded without one hashed version 1's keys

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


def key_fingerprint(key: str) -> str:
    """A short name for a key that reveals nothing of it; what versions record (`SplitKey.fingerprint`)."""
    return hashlib.sha256(bytes.fromhex(key)).hexdigest()[:12]


def _record(doc: Mapping[str, object]) -> EpochRecord:
    number, fraction, version = doc["_id"], doc["test_fraction"], doc.get("query_key_version", 1)
    assert isinstance(number, int) and isinstance(fraction, int | float) and isinstance(version, int)
    return EpochRecord(number, str(doc["key"]), float(fraction), str(doc.get("started_by")),
                       bool(doc.get("on_purpose")), version)  # fmt: skip


def latest_epoch(db: Db) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({}, sort=[("_id", DESCENDING)])
    return None if doc is None else _record(doc)


def get_epoch(db: Db, epoch: int) -> EpochRecord | None:
    doc = db[EVALUATION_EPOCHS].find_one({"_id": epoch})
    return None if doc is None else _record(doc)


def recorded_fingerprints(db: Db) -> dict[int, set[str]]:
    """The key fingerprints versions recorded for each epoch they trained under (documents without a
    readable epoch and fingerprint are skipped: versions from before stable splits)."""
    recorded: dict[int, set[str]] = {}
    for doc in db[MODEL_VERSIONS].find({"split.epoch": {"$exists": True}}, {"_id": 0, "split": 1}):
        split = doc.get("split")
        epoch = split.get("epoch") if isinstance(split, dict) else None
        fingerprint = split.get("key_fingerprint") if isinstance(split, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and isinstance(fingerprint, str):
            recorded.setdefault(epoch, set()).add(fingerprint)
    return recorded


def epoch_problem(recorded: Mapping[int, set[str]], epochs: Mapping[int, str], restarted_at: int) -> str | None:
    """Why jobs must not judge now, or None. `recorded`: fingerprints versions recorded per epoch;
    `epochs`: each stored epoch's key fingerprint; `restarted_at`: the newest epoch an operator started
    on purpose (0: none); the epochs before it are accepted as they are (judged as unknown if changed)."""
    problems = []
    for epoch in sorted(e for e in recorded if e >= restarted_at):
        stored = epochs.get(epoch)
        if stored is None:
            problems.append(f"epoch {epoch} is missing")
        elif recorded[epoch] != {stored}:
            theirs = ", ".join(sorted(recorded[epoch] - {stored})) or "none"
            problems.append(f"epoch {epoch} holds key {stored} where versions recorded {theirs}")
    if not problems:
        return None
    return (
        f"evaluation epochs do not match the registry: {'; '.join(problems)} (evaluation_epochs lost or "
        f"restored apart from model_versions?); the gate cannot know what the champion trained on, so no job "
        f"runs until an operator starts a new epoch on purpose: eduranker new-epoch"
    )


def check_epochs(db: Db) -> str | None:
    """`epoch_problem` on what the registry and `evaluation_epochs` hold now."""
    stored = {record.epoch: record for record in map(_record, db[EVALUATION_EPOCHS].find({}))}
    restarted = max((e for e, record in stored.items() if record.on_purpose), default=0)
    fingerprints = {e: record.fingerprint for e, record in stored.items()}
    return epoch_problem(recorded_fingerprints(db), fingerprints, restarted)


def verified_epoch(db: Db, epoch: int, recorded: Mapping[int, set[str]]) -> EpochRecord | None:
    """Epoch `epoch` if its stored key is the one versions recorded for it; None when it is missing or
    holds another key (the gate then treats what was trained under it as unknown)."""
    record = get_epoch(db, epoch)
    if record is None or (epoch in recorded and record.fingerprint not in recorded[epoch]):
        return None
    return record


def start_epoch(db: Db, test_fraction: float, key: str = "", *, by: str, query_key_version: int = 1) -> EpochRecord:
    """Start a new epoch on purpose (an operator's `eduranker new-epoch`): numbered after every epoch
    stored or recorded by a version, with `key` (hex) or a fresh random one, hashing `query_key_version`."""
    while True:
        latest = latest_epoch(db)
        number = max([latest.epoch if latest else 0, *recorded_fingerprints(db)]) + 1
        new_key = key.lower() or secrets.token_hex(32)
        doc = {"_id": number, "key": new_key, "test_fraction": test_fraction, "started_by": by, "on_purpose": True,
               "query_key_version": query_key_version}  # fmt: skip
        try:
            db[EVALUATION_EPOCHS].insert_one(doc)
        except DuplicateKeyError:
            continue  # a job started an epoch meanwhile: number after it
        return EpochRecord(number, new_key, test_fraction, by, True, query_key_version)


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
        return EpochRecord(number, new_key, test_fraction, by, query_key_version=query_key_version)
