"""The registry reads and writes of retention (`eduranker/retention.py` decides): the versions that must
keep their folders, each version's status and age, the conditional `artifacts: "pruned"` mark, and the
TTL index that expires finished jobs."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.errors import OperationFailure

from eduranker.store import versions
from eduranker.store.connection import MODEL_VERSIONS, TRAINING_JOBS
from eduranker.store.jobs import ACTIVE, WAITING
from eduranker.store.types import Db

PRUNABLE_STATUSES = (versions.REJECTED, versions.RETIRED, versions.ROLLED_BACK)
JOB_EXPIRY_INDEX = "finished_jobs_expire"


def version_views(db: Db) -> list[dict[str, Any]]:
    """Every version's name, status, registration time and artifacts mark (no history, no metrics)."""
    fields = {"_id": 0, "version": 1, "status": 1, "created_at": 1, "artifacts": 1}
    return list(db[MODEL_VERSIONS].find({}, fields))


def protected_versions(db: Db) -> tuple[list[str], set[str]]:
    """(the champion chain, the versions whose folders must stay): the champion and the previous
    champion (served by a holdback or an interleaving comparison), versions named by an active job, and
    versions retired since the oldest active job was created (it may have judged against one of them,
    or warm-start from it)."""
    record = versions.read_champion(db)
    protected = {v for v in (record.version, record.previous) if v}
    active = list(db[TRAINING_JOBS].find({"status": {"$in": [*ACTIVE, WAITING]}}, {"created_at": 1, "version": 1}))
    protected |= {str(job["version"]) for job in active if job.get("version")}
    started = [job["created_at"] for job in active if job.get("created_at") is not None]
    if started:
        since = {"retired_at": {"$gte": min(started)}}
        protected |= {doc["version"] for doc in db[MODEL_VERSIONS].find(since, {"version": 1})}
    return record.chain, protected


def ensure_job_expiry(db: Db, days: float) -> None:
    """Finished jobs (the only ones with `finished_at`) expire `days` after they finished."""
    seconds = int(days * 86400)
    try:
        db[TRAINING_JOBS].create_index([("finished_at", ASCENDING)], name=JOB_EXPIRY_INDEX, expireAfterSeconds=seconds)
    except OperationFailure as exc:
        if exc.code not in (85, 86):  # the index exists with another expiry: change it in place
            raise
        db.command({"collMod": TRAINING_JOBS, "index": {"name": JOB_EXPIRY_INDEX, "expireAfterSeconds": seconds}})


def mark_pruned(db: Db, version: str, *, by: str) -> bool:
    return versions.mark_pruned(db, version, PRUNABLE_STATUSES, by=by)
