"""The registry reads and writes of retention (`eduranker/pruning.py` decides): the versions that must
keep their folders, each version's status and age, the conditional `artifacts: "pruned"` mark, the
TTL index that expires finished jobs, and the last pass's report (`retention_state`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import OperationFailure

from eduranker.store import versions
from eduranker.store.clock import server_now
from eduranker.store.connection import MODEL_VERSIONS, TRAINING_JOBS
from eduranker.store.jobs import ACTIVE
from eduranker.store.types import Db

PRUNABLE_STATUSES = (versions.REJECTED, versions.RETIRED, versions.ROLLED_BACK)
JOB_EXPIRY_INDEX = "finished_jobs_expire"
RETENTION_STATE = "retention_state"  # one document, `_id: "last_pass"`: what the last prune pass did


@dataclass
class Protected:
    chain: list[str]  # the champion chain
    versions: set[str]  # the versions whose folders must stay
    seq: int  # the champion record's `seq` when this was read: prune marks are conditioned on it


def version_views(db: Db) -> list[dict[str, Any]]:
    """Every version's name, status, registration and retirement times and artifacts mark (no history,
    no metrics)."""
    fields = {"_id": 0, "version": 1, "status": 1, "created_at": 1, "retired_at": 1, "artifacts": 1}
    return list(db[MODEL_VERSIONS].find({}, fields))


def protected_versions(db: Db) -> Protected:
    """The champion and the previous champion (served by a holdback or an interleaving comparison),
    versions named by an active job, and versions retired since the oldest active job took the slot
    (it may have judged against one of them, or warm-start from it). Waiting jobs protect nothing: they
    have read nothing yet, and they take the slot (`slot_at`) only when it frees."""
    record = versions.read_champion(db)
    protected = {v for v in (record.version, record.previous) if v}
    fields = {"created_at": 1, "slot_at": 1, "version": 1}
    active = list(db[TRAINING_JOBS].find({"status": {"$in": list(ACTIVE)}}, fields))
    protected |= {str(job["version"]) for job in active if job.get("version")}
    started = [job.get("slot_at") or job["created_at"] for job in active if job.get("created_at") is not None]
    if started:
        since = {"retired_at": {"$gte": min(started)}}
        protected |= {doc["version"] for doc in db[MODEL_VERSIONS].find(since, {"version": 1})}
    return Protected(record.chain, protected, record.seq)


def ensure_job_expiry(db: Db, days: float) -> None:
    """Finished jobs (the only ones with `finished_at`) expire `days` after they finished."""
    seconds = int(days * 86400)
    try:
        db[TRAINING_JOBS].create_index([("finished_at", ASCENDING)], name=JOB_EXPIRY_INDEX, expireAfterSeconds=seconds)
    except OperationFailure as exc:
        if exc.code not in (85, 86):  # the index exists with another expiry: change it in place
            raise
        # The index's own collection (`fr.training_jobs`): a command names it, so not through `db[...]`.
        collection = db[TRAINING_JOBS].name
        db.command({"collMod": collection, "index": {"name": JOB_EXPIRY_INDEX, "expireAfterSeconds": seconds}})


def mark_pruned(db: Db, version: str, *, by: str, record_seq: int) -> bool:
    return versions.mark_pruned(db, version, PRUNABLE_STATUSES, by=by, record_seq=record_seq)


def save_pass(db: Db, report: dict[str, Any]) -> None:
    """Keep the last pass's report (pruned, refused, skipped documents) for `eduranker status`."""
    doc = {**report, "at": server_now(db)}
    db[RETENTION_STATE].replace_one({"_id": "last_pass"}, doc, upsert=True)


def last_pass(db: Db) -> dict[str, Any] | None:
    return db[RETENTION_STATE].find_one({"_id": "last_pass"})
