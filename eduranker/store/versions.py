"""`model_versions`: the registry of trained models and the one champion."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from eduranker.errors import UnknownVersion
from eduranker.store.connection import COUNTERS, MODEL_VERSIONS
from eduranker.store.jobs import now

CANDIDATE, CHAMPION, REJECTED, RETIRED = "candidate", "champion", "rejected", "retired"


def allocate_version(db: Database) -> str:
    """Next version name, strictly increasing across the registry's life ("v0001", "v0002", ...)."""
    counter = db[COUNTERS].find_one_and_update(
        {"_id": "model_version"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    return f"v{counter['seq']:04d}"


def insert_version(db: Database, doc: dict[str, Any]) -> None:
    doc = {"status": CANDIDATE, "created_at": now(), **doc}
    db[MODEL_VERSIONS].insert_one(doc)


def get_version(db: Database, version: str) -> dict[str, Any]:
    doc = db[MODEL_VERSIONS].find_one({"version": version})
    if doc is None:
        raise UnknownVersion(f"unknown model version: {version!r}")
    return doc


def get_champion(db: Database) -> dict[str, Any] | None:
    return db[MODEL_VERSIONS].find_one({"status": CHAMPION})


def list_versions(db: Database) -> list[dict[str, Any]]:
    return list(db[MODEL_VERSIONS].find({}, {"snapshot.skipped": 0}).sort("version", 1))


def set_status(db: Database, version: str, status: str, **fields: Any) -> None:
    db[MODEL_VERSIONS].update_one({"version": version}, {"$set": {"status": status, **fields}})


def promote(db: Database, version: str, *, max_attempts: int = 20) -> str | None:
    """Make `version` the champion and retire the old one; returns the previous champion's version.

    The partial unique index on status=champion is the real guard: a concurrent promotion that
    loses the race gets DuplicateKeyError and tries again against the new champion.
    """
    get_version(db, version)
    for _ in range(max_attempts):
        current = get_champion(db)
        if current is not None and current["version"] == version:
            return current.get("previous_champion")
        previous = current["version"] if current else None
        if current is not None:
            db[MODEL_VERSIONS].update_one(
                {"version": previous, "status": CHAMPION}, {"$set": {"status": RETIRED, "retired_at": now()}}
            )
        try:
            db[MODEL_VERSIONS].update_one(
                {"version": version},
                {"$set": {"status": CHAMPION, "promoted_at": now(), "previous_champion": previous}},
            )
        except DuplicateKeyError:
            continue
        return previous
    raise RuntimeError(f"could not promote {version}: champion kept changing")


def rollback(db: Database) -> tuple[str, str]:
    """Restore the champion's predecessor; returns (demoted, restored)."""
    current = get_champion(db)
    if current is None:
        raise UnknownVersion("there is no champion to roll back")
    previous = current.get("previous_champion")
    if not previous:
        raise UnknownVersion(f"champion {current['version']} has no previous champion to roll back to")
    restored = get_version(db, previous)
    db[MODEL_VERSIONS].update_one(
        {"version": current["version"], "status": CHAMPION},
        {"$set": {"status": RETIRED, "retired_at": now(), "rolled_back": True}},
    )
    db[MODEL_VERSIONS].update_one(
        {"version": previous},
        {
            "$set": {
                "status": CHAMPION,
                "promoted_at": now(),
                "previous_champion": restored.get("previous_champion"),
            }
        },
    )
    return current["version"], previous
