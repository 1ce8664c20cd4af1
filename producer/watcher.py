"""The change-stream loop: feedback events wake the producer; counts come from the database.

Every event batch (and every idle tick) re-reads two indexed counts and asks the policy. The resume
token is saved after the evaluation that covered its events, so a restart replays at most what was
not yet evaluated, and replaying is harmless: job ids derive from the feedback watermark.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from celery import Celery
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from eduranker.settings import Settings
from eduranker.store import ensure_indexes, jobs
from eduranker.store.connection import INFERENCES
from eduranker.store.feedback import LABELS, count_usable_feedback
from producer.outbox import enqueue, job_id_for, send_unsent
from producer.policy import Decision, FeedbackCounts, LastJob, Thresholds, decide
from producer.state import load_state, save_state

log = logging.getLogger(__name__)

# Only events that can change feedback wake us: inserts that carry it, updates that set or remove it,
# replaces and deletes (which may take a feedback away), and invalidate (the stream ends).
WATCH_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert", "fullDocument.feedback": {"$exists": True}},
                {"operationType": "update", "updateDescription.updatedFields.feedback": {"$exists": True}},
                {"operationType": "update", "updateDescription.removedFields": "feedback"},
                {"operationType": {"$in": ["replace", "delete", "invalidate"]}},
            ]
        }
    }
]
# Server codes for a resume point the server no longer has or refuses: FailedToParse, InvalidResumeToken,
# ChangeStreamFatalError, ChangeStreamHistoryLost.
RESUME_FAILED_CODES = {9, 260, 280, 286}


def thresholds_from(settings: Settings) -> Thresholds:
    return Thresholds(
        min_feedback=settings.train_min_feedback,
        min_minority=settings.train_min_minority,
        new_feedback=settings.train_new_feedback,
        cooldown_seconds=settings.train_cooldown_seconds,
    )


def latest_feedback_at(db: Database) -> datetime | None:
    doc = db[INFERENCES].find_one(
        {"feedback": {"$in": list(LABELS)}, "feedback_at": {"$type": "date"}},
        {"feedback_at": 1},
        sort=[("feedback_at", -1)],
    )
    return doc["feedback_at"] if doc else None


def last_job_view(db: Database) -> LastJob | None:
    job = jobs.latest_job(db)
    if job is None:
        return None
    watermark = (job.get("snapshot") or {}).get("watermark") or (job.get("trigger") or {}).get("watermark")
    return LastJob(job["_id"], job["status"], job["created_at"], watermark)


def read_counts(db: Database, last: LastJob | None) -> FeedbackCounts:
    """Usable likes and dislikes, and how many were set after the last job's watermark."""
    totals = count_usable_feedback(db)
    since = last.watermark if last else None
    new = sum(count_usable_feedback(db, since=since).values()) if since else sum(totals.values())
    return FeedbackCounts(totals["like"], totals["dislike"], new)


class Producer:
    def __init__(self, settings: Settings, db: Database, app: Celery, *, idle_eval_s: float = 5.0):
        self.settings, self.db, self.app = settings, db, app
        self.thresholds = thresholds_from(settings)
        self.idle_eval_s = idle_eval_s
        self.stop_event = threading.Event()
        self.watching = threading.Event()  # set while a change stream is open (readiness)
        self.last_reason = ""
        self.events_seen = 0

    # One evaluation: counts from the database, the policy's decision, maybe one enqueue.
    def evaluate(self, now: datetime | None = None) -> Decision:
        now = now or jobs.now()
        jobs.reap_dead_jobs(self.db, time_limit_s=self.settings.task_time_limit, at=now)
        last = last_job_view(self.db)
        counts = read_counts(self.db, last)
        decision = decide(counts, last, self.thresholds, now)
        if decision.reason != self.last_reason:
            log.info("%s", decision.reason)
            self.last_reason = decision.reason
        if decision.train:
            watermark = latest_feedback_at(self.db) or now
            trigger = {
                "reason": decision.reason,
                "source": "producer",
                "watermark": watermark,
                "counts": {"like": counts.likes, "dislike": counts.dislikes, "new": counts.new_since_watermark},
            }
            job_id = job_id_for(watermark)
            if enqueue(self.app, self.db, job_id, trigger, {}):
                log.info("enqueued %s (%s)", job_id, decision.reason)
        save_state(
            self.db,
            counts={"like": counts.likes, "dislike": counts.dislikes},
            new_since_watermark=counts.new_since_watermark,
            last_decision=decision.reason,
        )
        return decision

    def run(self) -> None:
        """Watch until stop() (SIGTERM); survives lost connections, lost history and invalidation."""
        backoff = 0.5
        ensure_indexes(self.db)
        while not self.stop_event.is_set():
            try:
                send_unsent(self.app, self.db)
                self.evaluate()
                self._watch(load_state(self.db).get("resume_token"))
                backoff = 0.5
            except OperationFailure as exc:
                if exc.code not in RESUME_FAILED_CODES:
                    raise
                log.warning("resume point lost (%s); dropping the token and recounting", exc)
                save_state(self.db, resume_token=None)
            except (ConnectionFailure, PyMongoError) as exc:
                log.warning("MongoDB unreachable (%s); retrying in %.1f s", exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        log.info("producer stopped")

    def _watch(self, resume_token: dict | None) -> None:
        with self.db[INFERENCES].watch(WATCH_PIPELINE, resume_after=resume_token, max_await_time_ms=250) as stream:
            saved, pending, last_eval = resume_token, 0, time.monotonic()
            self.watching.set()
            while not self.stop_event.is_set():
                change = stream.try_next()
                if change is not None:
                    self.events_seen += 1
                    pending += 1
                    if change["operationType"] == "invalidate":
                        log.warning("change stream invalidated; recounting")
                        self.evaluate()
                        save_state(self.db, resume_token=None)
                        return
                    continue  # drain the batch first: one evaluation covers all its events
                token = stream.resume_token
                due = time.monotonic() - last_eval >= self.idle_eval_s
                if pending or due:
                    self.evaluate()
                    pending, last_eval = 0, time.monotonic()
                # Saved also when the batch was empty, so an idle stream's token never goes stale.
                if token is not None and token != saved:
                    save_state(self.db, resume_token=token, events_seen=self.events_seen)
                    saved = token

        self.watching.clear()

    def stop(self) -> None:
        self.stop_event.set()
