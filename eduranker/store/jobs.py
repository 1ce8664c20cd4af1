"""`training_jobs`: one document per requested training run, the outbox and the job's history.

Invariants the database enforces, whatever order processes act in:
- one active job: `queued` and `running` jobs carry `active: true`, and a partial unique index admits one
  such document. A manual job asked for while another is active is recorded `waiting` and moved into
  the slot when it frees; an automatic one is not recorded at all, unless manual jobs wait: then it
  waits its turn behind them (one at most), so a stream of manual jobs cannot starve it.
- a bounded queue: each waiting job holds a `wait_slot` (0 to the cap less one for manual jobs,
  "automatic" for the automatic one) under a partial unique index, so at most MAX_WAITING_JOBS manual
  jobs wait, whoever records them at once.
- fencing: a run owns its job through the attempt number its claim set; every write of that run is
  conditioned on it, so a run that was taken over changes nothing.
- one clock: every time stored here (created, sent, heartbeat, finished) is the database server's
  (`$$NOW` in an update pipeline, or read from the server), and every cutoff is the server's now minus
  a length, so no two hosts' clocks are ever compared (`eduranker.store.clock`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from eduranker.errors import Refused, Superseded
from eduranker.records import JobDoc, JobStatus, TriggerDoc
from eduranker.store.clock import SERVER_NOW, literal, server_now
from eduranker.store.connection import TRAINING_JOBS
from eduranker.store.types import Db

log = logging.getLogger(__name__)

# Each status under its own name, for the callers' brevity (`jobs.QUEUED`): the members of JobStatus.
WAITING, QUEUED, RUNNING = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
SUCCEEDED, FAILED, REJECTED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED
ACTIVE = (QUEUED, RUNNING)  # the statuses that hold the one-active-job slot
TERMINAL = (SUCCEEDED, FAILED, REJECTED, CANCELLED)
MAX_ATTEMPTS = 3  # runs of one job before it is failed (each claim is one)


def now() -> datetime:
    """This host's clock: for labels and this process's own intervals only, never compared with a time
    another process wrote (those come from `server_now`)."""
    return datetime.now(UTC)


def _incremented(name: str) -> dict[str, Any]:
    return {"$add": [{"$ifNull": [f"${name}", 0]}, 1]}


class QueueFull(Refused):
    """MAX_WAITING_JOBS manual jobs wait already."""


AUTOMATIC_SLOT = "automatic"  # the wait slot of the one automatic job that may wait


def create_job(
    db: Db,
    job_id: str,
    *,
    trigger: TriggerDoc,
    overrides: dict[str, Any] | None = None,
    automatic: bool = False,
    sent: bool = False,
    max_waiting: int | None = None,
) -> JobStatus | None:
    """Record a job. Returns its status (`queued`, or `waiting` behind an active one), or None when
    nothing was recorded: the id exists already, an automatic job met an active one with no job
    waiting, or an automatic job waits already. A job that finds jobs waiting waits behind them (it
    never takes a free slot before them). QueueFull when `max_waiting` manual jobs wait."""
    at = server_now(db)
    doc: dict[str, Any] = {
        "_id": job_id,
        "status": QUEUED,
        "active": True,
        "automatic": automatic,
        "trigger": trigger,
        "overrides": overrides or {},
        "created_at": at,
        "slot_at": at,  # when it took the slot: retention protects what it may read from then
        "sent_at": at if sent else None,
        "sends": 1 if sent else 0,
        "attempts": 0,
    }
    if next_waiting(db) is None:  # first come, first served: nobody takes a free slot before a waiting job
        try:
            db[TRAINING_JOBS].insert_one(doc)
            return QUEUED
        except DuplicateKeyError:
            if get_job(db, job_id) is not None or (automatic and next_waiting(db) is None):
                return None
    doc.update(status=WAITING, sent_at=None, sends=0)
    del doc["active"], doc["slot_at"]
    slots: Iterable[int | str] = [AUTOMATIC_SLOT] if automatic else _wait_slots(max_waiting)
    for slot in slots:
        try:
            db[TRAINING_JOBS].insert_one({**doc, "wait_slot": slot})
            return WAITING
        except DuplicateKeyError:
            if automatic or get_job(db, job_id) is not None:
                return None
    raise QueueFull(f"{max_waiting} manual jobs wait already (MAX_WAITING_JOBS); ask again once one has started")


def _wait_slots(max_waiting: int | None) -> Iterable[int]:
    return range(max_waiting) if max_waiting is not None else itertools.count()


def get_job(db: Db, job_id: str) -> JobDoc | None:
    return _job(db[TRAINING_JOBS].find_one({"_id": job_id}))


def _job(doc: dict[str, Any] | None) -> JobDoc | None:
    """A stored job as its typed record (the documents this module writes have that shape)."""
    return cast("JobDoc | None", doc)


def _jobs(docs: Iterable[dict[str, Any]]) -> list[JobDoc]:
    return [cast(JobDoc, doc) for doc in docs]


def next_waiting(db: Db, *, automatic: bool | None = None) -> str | None:
    """The oldest waiting job's id: the next to take the slot (only manual or only automatic ones when
    `automatic` says which)."""
    query: dict[str, Any] = {"status": WAITING}
    if automatic is not None:
        query["automatic"] = automatic
    for job in db[TRAINING_JOBS].find(query, {"_id": 1}).sort("created_at", 1).limit(1):
        return str(job["_id"])
    return None


def advance_waiting(db: Db) -> str | None:
    """Move the oldest waiting job into the free slot; returns its id (to be sent), None if none moved.
    Conditional on the job still waiting and (the unique index) on the slot being free, so whoever
    calls it (the producer's outbox, the run that freed the slot) moves a job once."""
    for job in db[TRAINING_JOBS].find({"status": WAITING}, {"_id": 1}).sort("created_at", 1).limit(1):
        moved = {"status": QUEUED, "active": True, "sent_at": None, "slot_at": SERVER_NOW}
        try:
            result = db[TRAINING_JOBS].update_one(
                {"_id": job["_id"], "status": WAITING}, [{"$set": moved}, {"$unset": ["wait_slot"]}]
            )
        except DuplicateKeyError:
            return None  # the slot is taken
        return job["_id"] if result.modified_count else None
    return None


def mark_sent(db: Db, job_id: str) -> None:
    db[TRAINING_JOBS].update_one(
        {"_id": job_id, "status": QUEUED, "sent_at": None},
        [{"$set": {"sent_at": SERVER_NOW, "sends": _incremented("sends")}}],
    )


def unsent_jobs(db: Db) -> list[JobDoc]:
    return _jobs(db[TRAINING_JOBS].find({"status": QUEUED, "sent_at": None}).sort("created_at", 1))


NO_WORKER = "no worker: none answered a ping; the job waits in the queue for one to start"


def resend_unclaimed(
    db: Db,
    *,
    after_s: float,
    max_sends: int,
    at: datetime | None = None,
    worker_alive: Callable[[], bool] | None = None,
) -> list[str]:
    """Queued jobs no worker claimed within `after_s` of being sent: the message was lost (a flushed or
    restarted broker, retries exhausted). Marked unsent again, for the outbox to send under the same id;
    after `max_sends` sends, failed with the reason, but only while a worker is alive (`worker_alive`,
    asked only then): with none running, "no worker" is not "message lost", so the job keeps its message
    and waits, saying so, and is looked at again `after_s` later. With one active job, a queued job
    waits for nobody."""
    at = at or server_now(db)
    cutoff = at - timedelta(seconds=after_s)

    def resend(job: JobDoc) -> bool:
        fence = {"_id": job["_id"], "status": QUEUED, "sent_at": job["sent_at"]}
        if job.get("sends", 1) >= max_sends + 1 and worker_alive is not None and not worker_alive():
            wait = {"sent_at": at, "reason": NO_WORKER, "no_worker_since": job.get("no_worker_since") or at}
            result = db[TRAINING_JOBS].update_one(fence, {"$set": wait})
        elif job.get("sends", 1) >= max_sends + 1:
            reason = f"no worker claimed it within {after_s:.0f} s of any of {job.get('sends', 1)} sends"
            result = db[TRAINING_JOBS].update_one(fence, _terminal(FAILED, at, reason=reason))
        else:
            result = db[TRAINING_JOBS].update_one(fence, {"$set": {"sent_at": None, "resent_at": at}})
        return bool(result.modified_count)

    return contained("resend", db[TRAINING_JOBS].find({"status": QUEUED, "sent_at": {"$lt": cutoff}}), resend)


def contained(pass_name: str, docs: Iterable[dict[str, Any]], act: Callable[[JobDoc], bool]) -> list[str]:
    """`act` on each job; the ids it changed. A document missing a field or holding one of the wrong
    type (edited by hand) is skipped and logged: one bad document never stops the whole pass."""
    changed = []
    for job in _jobs(docs):
        try:
            if act(job):
                changed.append(str(job["_id"]))
        except (KeyError, TypeError, ValueError):
            log.warning("%s skipped job %r: a field is missing or mistyped", pass_name, job.get("_id"), exc_info=True)
    return changed


def claim_job(db: Db, job_id: str, *, worker: str, stale_after_s: float) -> JobDoc | None:
    """Move a queued job (or a running one silent for `stale_after_s`: its worker died) to running.
    The returned document's `attempts` is this run's fence."""
    stale = server_now(db) - timedelta(seconds=stale_after_s)
    stamp = {"status": RUNNING, "started_at": SERVER_NOW, "heartbeat_at": SERVER_NOW, "worker": {"$literal": worker}}
    return _job(
        db[TRAINING_JOBS].find_one_and_update(
            {
                "_id": job_id,
                "$or": [{"status": QUEUED}, {"status": RUNNING, "heartbeat_at": {"$lt": stale}}],
            },
            [{"$set": {**stamp, "attempts": _incremented("attempts")}}],
            return_document=ReturnDocument.AFTER,
        )
    )


def runs_died(job: JobDoc) -> int:
    """Claims that did not end in a hand-back: runs that died (or are running now)."""
    return int(job.get("attempts", 0)) - int(job.get("handed_back", 0))


def _fence(job_id: str, attempt: int) -> dict[str, Any]:
    return {"_id": job_id, "status": RUNNING, "attempts": attempt}


def _terminal(status: JobStatus, at: datetime | None, **fields: Any) -> list[dict[str, Any]]:
    """The update that ends a job (an update pipeline): `finished_at` is `at`, or the server's now."""
    finished: Any = SERVER_NOW if at is None else {"$literal": at}
    return [
        {"$set": {**literal(fields), "status": status, "finished_at": finished}},
        {"$unset": ["active", "wait_slot"]},
    ]


def update_job(db: Db, job_id: str, attempt: int, **fields: Any) -> None:
    """A write of the run that owns attempt `attempt`; Superseded if it no longer does."""
    update = [{"$set": {"heartbeat_at": SERVER_NOW, **literal(fields)}}]
    if db[TRAINING_JOBS].update_one(_fence(job_id, attempt), update).matched_count == 0:
        raise Superseded(f"job {job_id} attempt {attempt} was taken over; this run stops")


def heartbeat(db: Db, job_id: str, attempt: int) -> bool:
    """False when the run no longer owns its job."""
    beat = [{"$set": {"heartbeat_at": SERVER_NOW}}]
    return db[TRAINING_JOBS].update_one(_fence(job_id, attempt), beat).matched_count == 1


def finish_job(db: Db, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> None:
    """The run's last write: a terminal status, conditioned on still owning the job."""
    if status not in TERMINAL:
        raise ValueError(f"not a terminal status: {status}")
    if db[TRAINING_JOBS].update_one(_fence(job_id, attempt), _terminal(status, None, **fields)).matched_count == 0:
        raise Superseded(f"job {job_id} attempt {attempt} was taken over; its outcome is not recorded")


def hand_back(db: Db, job_id: str, attempt: int, reason: str, *, max_handbacks: int | None = None) -> JobStatus | None:
    """Return a running job to the queue (a retryable failure, a worker shutting down): unsent, so the
    outbox sends it again at once. With `max_handbacks`, a job handed back that often already fails
    instead, with the count and the last reason. Returns the job's new status (`queued` or `failed`), or
    None when the run no longer owned it."""
    if max_handbacks is not None:
        job = db[TRAINING_JOBS].find_one(_fence(job_id, attempt), {"handed_back": 1})
        if job is None:
            return None
        done = int(job.get("handed_back") or 0)
        if done >= max_handbacks:
            why = f"handed back {done} times (JOB_MAX_HANDBACKS {max_handbacks}); last: {reason}"
            fence = {**_fence(job_id, attempt), "handed_back": job.get("handed_back")}
            ended = db[TRAINING_JOBS].update_one(fence, _terminal(FAILED, None, reason=why)).matched_count == 1
            return FAILED if ended else None
    handed = _incremented("handed_back")
    update: list[dict[str, Any]] = [
        # A run given back did not die: it does not count against MAX_ATTEMPTS.
        {"$set": {"status": QUEUED, "sent_at": None, "reason": {"$literal": reason}, "handed_back": handed}},
        {"$unset": ["heartbeat_at"]},
    ]
    return QUEUED if db[TRAINING_JOBS].update_one(_fence(job_id, attempt), update).matched_count == 1 else None


def cancel_job(db: Db, job_id: str, reason: str) -> bool:
    """Cancel a job that has not ended (an operator stopping it); a running job's run is fenced out."""
    result = db[TRAINING_JOBS].update_one(
        {"_id": job_id, "status": {"$in": [WAITING, QUEUED, RUNNING]}}, _terminal(CANCELLED, None, reason=reason)
    )
    return result.modified_count == 1


def note_stopped_run(db: Db, job_id: str, attempt: int, stopped: dict[str, Any]) -> bool:
    """On a job cancelled while attempt `attempt` ran it, note where that run stopped (`stopped_run`):
    a cancelled job is owned by no other run, so this changes nothing anyone acts on."""
    fence = {"_id": job_id, "status": CANCELLED, "attempts": attempt, "stopped_run": {"$exists": False}}
    return db[TRAINING_JOBS].update_one(fence, {"$set": {"stopped_run": stopped}}).modified_count == 1


def requeue_silent(db: Db, *, silent_after_s: float, at: datetime | None = None) -> list[str]:
    """Running jobs whose heartbeat stopped `silent_after_s` ago (the worker died, was stopped, or lost
    the database): back to the queue, unsent, so another worker starts them within minutes; failed once
    MAX_ATTEMPTS runs have died. Conditioned on the attempt read, so a run that came back wins."""
    at = at or server_now(db)
    cutoff = at - timedelta(seconds=silent_after_s)

    def requeue(job: JobDoc) -> bool:
        fence = {**_fence(job["_id"], job["attempts"]), "heartbeat_at": job["heartbeat_at"]}
        silent = f"worker {job.get('worker')} silent for more than {silent_after_s:.0f} s"
        update: list[dict[str, Any]] | dict[str, Any]
        if runs_died(job) >= MAX_ATTEMPTS:
            update = _terminal(FAILED, at, reason=f"{silent}; gave up after {job['attempts']} attempts")
        else:
            update = {"$set": {"status": QUEUED, "sent_at": None, "reason": f"{silent}; requeued"}}
        return bool(db[TRAINING_JOBS].update_one(fence, update).modified_count)

    return contained("requeue", db[TRAINING_JOBS].find({"status": RUNNING, "heartbeat_at": {"$lt": cutoff}}), requeue)


def unfinished_jobs(db: Db) -> list[JobDoc]:
    """Jobs not ended, oldest first: the active one (queued or running) and the waiting ones."""
    return _jobs(db[TRAINING_JOBS].find({"status": {"$in": [*ACTIVE, WAITING]}}).sort("created_at", 1))


def active_job(db: Db) -> JobDoc | None:
    return _job(db[TRAINING_JOBS].find_one({"active": True}))


def latest_job(db: Db, query: dict[str, Any] | None = None) -> JobDoc | None:
    return _job(db[TRAINING_JOBS].find_one(query or {}, sort=[("created_at", -1)]))


def jobs_since(db: Db, since: datetime) -> list[JobDoc]:
    return _jobs(db[TRAINING_JOBS].find({"created_at": {"$gte": since}}).sort("created_at", 1))


def count_jobs(db: Db, query: dict[str, Any]) -> int:
    return db[TRAINING_JOBS].count_documents(query)


def headline(job: JobDoc) -> str:
    """How a job ended, in one line: what Flower's task list and the demo show first."""
    status = job.get("status", "unknown")
    if status == SUCCEEDED and job.get("promoted"):
        return f"PROMOTED {job.get('version')}: {job.get('gate_reason')}"
    if status == SUCCEEDED and job.get("challenger"):
        return f"CHALLENGER {job.get('version')}: users decide; {job.get('gate_reason')}"
    if status == REJECTED:
        return f"REJECTED {job.get('version')}: {job.get('reason')}"
    return f"{str(status).upper()}: {job.get('reason') or ''}".rstrip(": ")
