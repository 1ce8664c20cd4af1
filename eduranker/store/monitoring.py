"""Reads for the producer's metrics (producer/metrics.py): a fixed handful of commands per refresh,
each bounded by a limit or grouped on the server, so their number never follows the data's size."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eduranker.store import jobs
from eduranker.store.clock import as_utc
from eduranker.store.connection import CHAMPION_RECORD, MODEL_VERSIONS, PRODUCER_STATE, TRAINING_JOBS
from eduranker.store.lease import LEASE_ID
from eduranker.store.types import Db, Document
from eduranker.store.versions import RECORD_ID

RECENT_TERMINAL = 50  # jobs looked at for the failures in a row (more than any sane alert threshold)


def job_statuses(db: Db) -> dict[str, tuple[int, datetime | None]]:
    """Per status: how many jobs have it and when the newest of them finished (one grouped command)."""
    out: dict[str, tuple[int, datetime | None]] = {}
    rows = db[TRAINING_JOBS].aggregate(
        [{"$group": {"_id": "$status", "n": {"$sum": 1}, "last": {"$max": "$finished_at"}}}]
    )
    for row in rows:
        last = row.get("last")
        out[str(row["_id"])] = (int(row["n"]), as_utc(last) if isinstance(last, datetime) else None)
    return out


def _number(expr: str) -> dict[str, Any]:
    return {"$cond": [{"$isNumber": expr}, expr, 0]}


def stage_histogram(db: Db, bounds: Sequence[float]) -> dict[str, tuple[int, float, list[int]]]:
    """Per stage of the jobs' `timings` (seconds, written by the worker), and `total` (their sum per
    job): (count, sum, how many took at most each bound). Grouped on the server: one reply of a few
    rows, however many jobs there are."""
    per_bound = {f"le{i}": {"$sum": {"$cond": [{"$lte": ["$t.v", b]}, 1, 0]}} for i, b in enumerate(bounds)}
    total = {"$reduce": {"input": "$t", "initialValue": 0, "in": {"$add": ["$$value", _number("$$this.v")]}}}
    rows = db[TRAINING_JOBS].aggregate([
        {"$match": {"timings": {"$type": "object"}}},
        {"$project": {"_id": 0, "t": {"$objectToArray": "$timings"}}},
        {"$project": {"t": {"$concatArrays": ["$t", [{"k": "total", "v": total}]]}}},
        {"$unwind": "$t"},
        {"$match": {"t.v": {"$type": "number"}}},
        {"$group": {"_id": "$t.k", "n": {"$sum": 1}, "sum": {"$sum": "$t.v"}, **per_bound}},
    ])  # fmt: skip
    return {
        str(row["_id"]): (int(row["n"]), float(row["sum"]), [int(row[f"le{i}"]) for i in range(len(bounds))])
        for row in rows
    }


def failures_in_a_row(db: Db) -> int:
    """Failed jobs since the newest job that ended otherwise (cancelled ones skipped: an operator's act)."""
    ended = db[TRAINING_JOBS].find(
        {"status": {"$in": [jobs.SUCCEEDED, jobs.REJECTED, jobs.FAILED]}, "finished_at": {"$type": "date"}},
        {"status": 1},
        sort=[("finished_at", -1)],
        limit=RECENT_TERMINAL,
    )
    count = 0
    for job in ended:
        if job["status"] != jobs.FAILED:
            break
        count += 1
    return count


def champion_document(db: Db) -> Document:
    """The champion record as stored (`version`, `switched_at`, `chain`), {} before any champion."""
    return db[CHAMPION_RECORD].find_one({"_id": RECORD_ID}) or {}


def lease_document(db: Db) -> Document:
    return db[PRODUCER_STATE].find_one({"_id": LEASE_ID}) or {}


def recent_versions(db: Db, limit: int, *, also: str | None = None) -> list[Document]:
    """The newest `limit` versions' figures (offline metrics, gate intervals, live counts), and version
    `also` (the champion) when it is older: two queries at most."""
    fields = {"version": 1, "status": 1, "metrics.after": 1, "gate.intervals": 1, "online": 1, "challenge": 1}
    found = list(db[MODEL_VERSIONS].find({}, fields, sort=[("version", -1)], limit=limit))
    if also is not None and all(doc.get("version") != also for doc in found):
        older = db[MODEL_VERSIONS].find_one({"version": also}, fields)
        found += [older] if older is not None else []
    return found


def challenge_outcomes(db: Db) -> dict[str, int]:
    """Ended challenges by outcome (one aggregation)."""
    found = db[MODEL_VERSIONS].aggregate([
        {"$match": {"challenge.outcome": {"$type": "string"}}},
        {"$group": {"_id": "$challenge.outcome", "n": {"$sum": 1}}},
    ])  # fmt: skip
    return {str(doc["_id"]): int(doc["n"]) for doc in found}


def guard_rollbacks(db: Db) -> int:
    """Versions the online guard rolled back (each carries `guard_rolled_back`)."""
    return db[MODEL_VERSIONS].count_documents({"guard_rolled_back": True})


def as_timestamp(value: Any) -> float | None:
    return as_utc(value).timestamp() if isinstance(value, datetime) else None
