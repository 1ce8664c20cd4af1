"""`training_jobs`: one document per requested training run, the outbox and the job's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from eduranker.store.connection import TRAINING_JOBS

QUEUED, RUNNING, SUCCEEDED, FAILED, REJECTED = "queued", "running", "succeeded", "failed", "rejected"
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, REJECTED)


def now() -> datetime:
    return datetime.now(UTC)


def create_job(
    db: Database,
    job_id: str,
    *,
    trigger: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    sent: bool = False,
) -> bool:
    """Insert a queued job; False if that id already exists (the unique _id makes enqueue idempotent)."""
    at = now()
    doc = {
        "_id": job_id,
        "status": QUEUED,
        "trigger": trigger,
        "overrides": overrides or {},
        "created_at": at,
        "sent_at": at if sent else None,
        "attempts": 0,
    }
    try:
        db[TRAINING_JOBS].insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


def get_job(db: Database, job_id: str) -> dict[str, Any] | None:
    return db[TRAINING_JOBS].find_one({"_id": job_id})


def mark_sent(db: Database, job_id: str) -> None:
    db[TRAINING_JOBS].update_one({"_id": job_id, "sent_at": None}, {"$set": {"sent_at": now()}})


def unsent_jobs(db: Database) -> list[dict[str, Any]]:
    return list(db[TRAINING_JOBS].find({"status": QUEUED, "sent_at": None}).sort("created_at", 1))


def claim_job(db: Database, job_id: str, *, worker: str, stale_after_s: float) -> dict[str, Any] | None:
    """Move a queued job (or a running one silent for `stale_after_s`: its worker died) to running."""
    at = now()
    stale = at - timedelta(seconds=stale_after_s)
    return db[TRAINING_JOBS].find_one_and_update(
        {
            "_id": job_id,
            "$or": [{"status": QUEUED}, {"status": RUNNING, "heartbeat_at": {"$lt": stale}}],
        },
        {
            "$set": {"status": RUNNING, "started_at": at, "heartbeat_at": at, "worker": worker},
            "$inc": {"attempts": 1},
        },
        return_document=ReturnDocument.AFTER,
    )


def update_job(db: Database, job_id: str, **fields: Any) -> None:
    fields.setdefault("heartbeat_at", now())
    db[TRAINING_JOBS].update_one({"_id": job_id}, {"$set": fields})


def finish_job(db: Database, job_id: str, status: str, **fields: Any) -> None:
    if status not in TERMINAL:
        raise ValueError(f"not a terminal status: {status}")
    fields.update(status=status, finished_at=now())
    db[TRAINING_JOBS].update_one({"_id": job_id}, {"$set": fields})


def active_jobs(db: Database) -> list[dict[str, Any]]:
    return list(db[TRAINING_JOBS].find({"status": {"$in": list(ACTIVE)}}).sort("created_at", 1))


def latest_job(db: Database) -> dict[str, Any] | None:
    return db[TRAINING_JOBS].find_one({}, sort=[("created_at", -1)])


def heartbeat(db: Database, job_id: str) -> None:
    db[TRAINING_JOBS].update_one({"_id": job_id, "status": RUNNING}, {"$set": {"heartbeat_at": now()}})


def reap_dead_jobs(db: Database, *, dead_after_s: float, at: datetime | None = None) -> list[str]:
    """Fail running jobs silent for `dead_after_s`: no worker came back for them (no job runs forever)."""
    at = at or now()
    cutoff = at - timedelta(seconds=dead_after_s)
    dead = [d["_id"] for d in db[TRAINING_JOBS].find({"status": RUNNING, "heartbeat_at": {"$lt": cutoff}})]
    for job_id in dead:
        db[TRAINING_JOBS].update_one(
            {"_id": job_id, "status": RUNNING},
            {
                "$set": {
                    "status": FAILED,
                    "finished_at": at,
                    "reason": f"worker silent for more than {dead_after_s:.0f} s and never redelivered; marked dead",
                }
            },
        )
    return dead
