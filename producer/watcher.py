"""The change-stream loop: feedback events wake the producer; counts come from the database.

Every event batch (at least every `max_batch_s` under a stream that never pauses, and every idle tick)
is an evaluation, and an evaluation reads only what could change its answer: the job history at most
once a second (with housekeeping), the counts of the trigger window only when the events since the
last count could have crossed the threshold (`policy.worth_counting`), and both again, fresh, before it
enqueues. The producer's state, resume token included, is written when the decision changes and at
most once a second otherwise, so a restart replays at most a second of events that were already
evaluated; replaying is harmless: job ids derive from the feedback watermark.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery import Celery
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from eduranker import champion, retention
from eduranker.settings import Settings
from eduranker.store import ensure_indexes, jobs
from eduranker.store.clock import ServerClock
from eduranker.store.connection import INFERENCES, CommandCounter
from eduranker.store.feedback import latest_feedback_at
from eduranker.store.lease import Lease
from eduranker.store.online import ensure_online_indexes
from eduranker.store.types import Db, Document
from producer.duties import Duties
from producer.history import read_history
from producer.online import refresh_online
from producer.outbox import enqueue, job_id_for, send_unsent
from producer.policy import (
    Decision,
    FeedbackCounts,
    JobHistory,
    decide,
    waiting_reason,
    worth_counting,
)
from producer.state import load_state, save_state
from producer.trigger import read_counts, thresholds_from
from producer.workers import workers_alive

log = logging.getLogger(__name__)
PRODUCER = "producer"  # who the champion pointer's repairs are logged as

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
AWAIT_S = 0.25  # how long one getMore waits on the server for an event
MAX_FETCHES = 2
HOUSEKEEPING_S = 1.0  # requeue, resend, send, reconcile and read the job history at most this often
RETENTION_S = 86400.0  # the models volume grows by a job's folder a retrain: once a day keeps it bounded
DUTIES_WRITE_S = 5.0  # the duties' state is stored at least this often, and at once after a failure
STATE_WRITE_S = 1.0  # the producer's state (last decision, resume token) is written at most this often
RECOUNT_S = 60.0  # counted at least this often even without events: a restored collection sends none


def is_buffered(stream: Any) -> bool:
    """Whether the stream's next change is already in pymongo's local batch (no round trip to fetch it).

    pymongo has no public call for this. Without its cursor's `_has_next` the answer is True, so no read
    counts as a fetch and only the drain's time bound applies. tests/test_producer.py checks it is there.
    """
    has_next = getattr(getattr(stream, "_cursor", None), "_has_next", None)
    return bool(has_next()) if callable(has_next) else True


class LeaseLost(Exception):
    """This producer no longer leads: it stops acting and stands by."""


class Producer:
    def __init__(
        self,
        settings: Settings,
        db: Db,
        app: Celery,
        *,
        idle_eval_s: float = 5.0,
        max_batch_s: float = 0.25,
        holder: str | None = None,
        commands: CommandCounter | None = None,
    ):
        self.settings, self.db, self.app = settings, db, app
        self.thresholds = thresholds_from(settings)
        self.idle_eval_s, self.max_batch_s = idle_eval_s, max_batch_s
        self.stop_event = threading.Event()
        self.watching = threading.Event()  # set while leading with a change stream open (readiness)
        self.lease = Lease(db, holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                           settings.producer_lease_seconds)  # fmt: skip
        self.last_reason = ""
        self.events_seen = 0
        self.last_read_s = 0.0  # how long the last evaluation's reads took
        self.housekept_at = 0.0
        # A broker outage never holds the leader past its lease: sending gives up after a fifth of it
        # (at most 2 s); the job stays recorded unsent and the next pass sends it.
        self.send_budget_s = min(2.0, settings.producer_lease_seconds / 5)
        self.clock = ServerClock(db)  # the one clock the producer compares times with: the server's
        self.duties = Duties(stop_on=(LeaseLost,))
        self.duties_written_at = 0.0
        self.loop_failures = 0  # refusals that ended a watch (shown in `eduranker status`)
        self.indexed, self.standby_logged = False, False
        self._add_duties()
        self.history: JobHistory | None = None  # read with housekeeping, and before every enqueue
        self.counted: tuple[datetime | None, FeedbackCounts] | None = None  # (window, counts) last read
        self.counted_at = 0.0
        self.count_until: datetime | None = None  # the server time the last count's window ended at
        self.uncounted_events = 0  # change events since the last count
        self.evaluations = 0
        self.state_written_at = 0.0
        self.commands = commands or CommandCounter()  # what this process costs the database (if counted)

    def _add_duties(self) -> None:
        """The housekeeping duties, in the order they run; each failure is contained (producer/duties.py).
        A new duty: `self.duties.add(name, interval_s, fn)` with `fn(server_now)`."""
        s = self.settings
        self.duties.add("requeue", HOUSEKEEPING_S, self._requeue)
        self.duties.add("resend", HOUSEKEEPING_S, self._resend)
        self.duties.add(
            "send", HOUSEKEEPING_S, lambda _at: send_unsent(self.app, self.db, max_wait_s=self.send_budget_s)
        )
        # reconcile: a models volume that cannot be read (EACCES, EIO, ESTALE) fails this duty alone.
        self.duties.add("reconcile", HOUSEKEEPING_S, lambda _at: champion.reconcile(self.db, s.models_dir, by=PRODUCER))
        self.duties.add("online", s.online_refresh_seconds, lambda _at: refresh_online(self.db, s))
        # retention (docs/retention.md): old rejected and retired folders, finished jobs' expiry; daily.
        self.duties.add("retention", RETENTION_S, lambda at: retention.prune(self.db, s, now=at, by=PRODUCER))

    def _requeue(self, now: datetime) -> None:
        for job_id in jobs.requeue_silent(self.db, silent_after_s=self.settings.job_requeue_after_s, at=now):
            log.warning("job %s: its worker fell silent; requeued (or failed after its last attempt)", job_id)

    def _resend(self, now: datetime) -> None:
        s = self.settings
        for job_id in jobs.resend_unclaimed(
            self.db, after_s=s.job_resend_after_seconds, max_sends=s.job_max_resends, at=now,
            worker_alive=lambda: workers_alive(self.app),
        ):  # fmt: skip
            log.warning("job %s: not claimed %.0f s after it was sent; resending (or failed)", job_id,
                        s.job_resend_after_seconds)  # fmt: skip

    def housekeeping(self, now: datetime) -> None:
        """What keeps every job moving (the duties that are due: silent runs requeued, lost messages
        resent, unsent jobs sent, the champion pointer reconciled, live metrics refreshed), then the job
        history. `now` is the database server's."""
        failed = self.duties.run_due(now)
        if failed or self.duties.failing() or time.monotonic() - self.duties_written_at >= DUTIES_WRITE_S:
            self._write_duties()
        self.history = read_history(self.db, self.settings.auto_retry_limit)
        self.housekept_at = time.monotonic()

    def _write_duties(self) -> None:
        try:
            save_state(self.db, duties=self.duties.report())
            self.duties_written_at = time.monotonic()
        except PyMongoError:  # shown at the next write; the evaluation's own reads report the outage
            log.warning("could not store the housekeeping duties' state", exc_info=True)

    # One evaluation: the policy's decision on what may have changed, maybe one enqueue.
    def evaluate(
        self,
        now: datetime | None = None,
        *,
        events: int = 0,
        events_until: datetime | None = None,
        resume_token: Mapping[str, Any] | None = None,
    ) -> Decision:
        """`events`: change events since the last evaluation; `events_until`: wall time of the newest
        (for lag); `resume_token`: the stream's position after them, saved with the state."""
        if not self.lease.keep():
            raise LeaseLost("lease lost before an evaluation")
        now = now or self.clock.now()
        began = time.monotonic()
        self.uncounted_events += events
        self.evaluations += 1
        history_read_now = True
        if began - self.housekept_at >= HOUSEKEEPING_S or self.history is None:
            self.housekeeping(now)
        elif self.history.active is not None and jobs.active_job(self.db) is None:
            # The slot freed since the last read: one indexed find per evaluation while a job is active,
            # so the next job may start at the next crossing, not at the next housekeeping.
            self.history = read_history(self.db, self.settings.auto_retry_limit)
        else:
            history_read_now = False
        assert self.history is not None
        decision, counts = self._decide(self.history, now, fresh=False)
        if decision.train:
            # Acting on a second-old history could start a job beside one just started: read both again.
            if not history_read_now:
                self.history = read_history(self.db, self.settings.auto_retry_limit)
            decision, counts = self._decide(self.history, now, fresh=True)
        self.last_read_s = time.monotonic() - began
        if decision.train and counts is not None:
            self._enqueue(decision, self.history, counts, now)
            self.history = read_history(self.db, self.settings.auto_retry_limit)
        self._write_state(decision, counts, now, events_until, resume_token)
        return decision

    def _decide(self, history: JobHistory, now: datetime, *, fresh: bool) -> tuple[Decision, FeedbackCounts | None]:
        waiting = waiting_reason(history, self.thresholds, now)
        if waiting:  # while a job is active or cooling down no count can change the answer
            return Decision(False, waiting), None
        last = self.counted[1] if self.counted and self.counted[0] == history.window_since else None
        # The progress shown (state, log) lags the events by at most one idle interval; the answer by none.
        since_count = time.monotonic() - self.counted_at
        overdue = since_count >= RECOUNT_S or (self.uncounted_events > 0 and since_count >= self.idle_eval_s)
        if fresh or overdue or worth_counting(last, self.uncounted_events, history, self.thresholds):
            # The window ends at the server's now read just before counting (not the evaluation's start):
            # every event seen so far was written before it, so none on time is left out of this count.
            self.count_until = max(now, self.clock.read())
            last = read_counts(self.db, history, cap=self.thresholds.new_feedback, until=self.count_until)
            self.counted, self.counted_at, self.uncounted_events = (history.window_since, last), time.monotonic(), 0
        assert last is not None
        return decide(last, history, self.thresholds, now), last

    def _write_state(
        self,
        decision: Decision,
        counts: FeedbackCounts | None,
        now: datetime,
        events_until: datetime | None,
        resume_token: Mapping[str, Any] | None,
    ) -> None:
        changed = decision.reason != self.last_reason
        if changed:
            log.info("%s", decision.reason)
            self.last_reason = decision.reason
        if not changed and time.monotonic() - self.state_written_at < STATE_WRITE_S:
            return
        if not self.lease.held():  # a leader that outlived its lease (a stall) writes no state
            raise LeaseLost("lease lost before writing the state")
        state: dict[str, Any] = {"last_decision": decision.reason, "evaluated_at": now, "leader": self.lease.holder}
        if counts is not None:
            state["counts"] = {"like": counts.likes, "dislike": counts.dislikes}
        if events_until is not None:
            state["last_event_wall_time"] = events_until
        if resume_token is not None:
            state["resume_token"] = resume_token
        state["events_seen"] = self.events_seen
        state["evaluations"] = self.evaluations
        state["db_commands"] = dict(self.commands.by_name)
        save_state(self.db, **state)
        self.state_written_at = time.monotonic()

    def _enqueue(self, decision: Decision, history: JobHistory, counts: FeedbackCounts, now: datetime) -> None:
        if decision.retry_of is not None:
            watermark, job_id = (
                decision.retry_of.watermark,
                job_id_for(decision.retry_of.watermark, decision.retry_of.failures),
            )
        else:
            # The window ended at `now` (the server's): feedback a skewed client dated later was not
            # counted, and the watermark is never beyond it, so that feedback is counted once its time comes.
            until = self.count_until or now
            newest = latest_feedback_at(self.db, since=history.window_since, until=until) or until
            watermark = min(newest, until)
            job_id = job_id_for(watermark)
        trigger = {
            "reason": decision.reason,
            "source": "producer",
            "watermark": watermark,
            "counts": {"like": counts.likes, "dislike": counts.dislikes},
        }
        # The last check before a write that starts work: a producer that lost its lease stops here.
        if not self.lease.held():
            raise LeaseLost("lease lost before enqueue")
        if enqueue(self.app, self.db, job_id, trigger, {}, automatic=True, max_wait_s=self.send_budget_s):
            log.info("enqueued %s (%s)", job_id, decision.reason)

    def run(self) -> None:
        """Watch until stop() (SIGTERM); survives lost connections, lost history, invalidation and
        refused commands: whatever ends one watch is logged and retried, the process never crash-loops."""
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                if self._lead_once():
                    backoff = 0.5
                continue
            except LeaseLost as exc:
                log.warning("%s; standing by", exc)
                continue
            except OperationFailure as exc:
                if exc.code in RESUME_FAILED_CODES:
                    log.warning("resume point lost (%s); dropping the token and recounting", exc)
                    save_state(self.db, resume_token=None)
                    continue
                # Any other refusal (Interrupted, MaxTimeMSExpired, Unauthorized while a role is being
                # fixed, …) is an outage of this loop, not of the process: a crash-looping producer
                # requeues, resends and guards nothing. Counted, shown, retried with backoff.
                self._note_loop_failure(exc, f"the database refused a command (code {exc.code})")
            except (ConnectionFailure, PyMongoError) as exc:
                log.warning("MongoDB unreachable (%s); retrying in %.1f s", exc, backoff)
            except Exception as exc:  # a bug or an unforeseen fault: logged with its trace, retried
                log.exception("producer loop failed; retrying in %.1f s", backoff)
                self._note_loop_failure(exc, "unexpected error")
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, 30.0)
        try:
            self.lease.release()
        except PyMongoError:
            log.warning("could not release the lease; a standby takes over when it expires")
        log.info("producer stopped")

    def _lead_once(self) -> bool:
        """Stand by one lease interval, or lead until the watch ends; True when it led."""
        if not self.indexed:  # in the loop: an unreachable or refusing server is retried, not fatal
            ensure_indexes(self.db)
            ensure_online_indexes(self.db)
            self.indexed = True
        if not self.lease.acquire():
            if not self.standby_logged:
                log.info("standing by: another producer holds the lease")
                self.standby_logged = True
            self.stop_event.wait(self.lease.seconds / 3)
            return False
        log.info("leading (lease %s)", self.lease.holder)
        self.standby_logged = False
        # Another leader may have acted meanwhile: nothing remembered from before is trusted.
        self.history, self.counted = None, None
        self.evaluate()
        self._watch(load_state(self.db).get("resume_token"))
        return True

    def _note_loop_failure(self, exc: Exception, what: str) -> None:
        self.loop_failures += 1
        log.warning("%s: %s (%d so far); retrying", what, exc, self.loop_failures)
        try:
            save_state(self.db, loop_failures=self.loop_failures, loop_error=f"{type(exc).__name__}: {exc}"[:500])
        except PyMongoError:  # the log has it; the next successful write of the state shows the count
            log.debug("could not store the loop's failure", exc_info=True)

    def _watch(self, resume_token: Mapping[str, Any] | None) -> None:
        try:
            self._follow(resume_token)
        finally:
            self.watching.clear()

    def _follow(self, resume_token: Mapping[str, Any] | None) -> None:
        await_ms = int(AWAIT_S * 1000)
        with self.db[INFERENCES].watch(WATCH_PIPELINE, resume_after=resume_token, max_await_time_ms=await_ms) as stream:
            pending, last_eval, newest = 0, time.monotonic(), None
            gap = self.max_batch_s
            self.watching.set()
            while not self.stop_event.is_set():
                if not self.lease.keep():
                    raise LeaseLost("lease lost while watching")
                # Events pile up on the server until the next evaluation is due, then are read in a few
                # large batches: one small getMore per event costs the server more than the writes do.
                if pending:
                    self.stop_event.wait(max(0.0, last_eval + gap - time.monotonic()))
                changes = self._drain(stream, budget_s=gap, idle=not pending)
                self.events_seen += len(changes)
                pending += len(changes)
                if changes:
                    newest = changes[-1].get("wallTime") or newest
                    if changes[-1]["operationType"] == "invalidate":
                        log.warning("change stream invalidated; recounting")
                        self.counted = None
                        self.evaluate()
                        save_state(self.db, resume_token=None)
                        return
                waited = time.monotonic() - last_eval
                if (pending and waited >= gap) or waited >= self.idle_eval_s:
                    # The token covers every event read so far, all of them in this evaluation; idle
                    # evaluations save it too, so an idle stream's token never goes stale.
                    self.evaluate(events=pending, events_until=newest, resume_token=stream.resume_token)
                    pending, last_eval = 0, time.monotonic()
                    # Slow counting (a large window, a busy server) stretches the gap so that it takes at
                    # most a fifth of the time.
                    gap = max(self.max_batch_s, 4 * self.last_read_s)

    def _drain(self, stream: Any, *, budget_s: float, idle: bool) -> list[Document]:
        """The events that have piled up, not the tail: under steady writes every getMore would return the
        one event written meanwhile, so a drain makes at most MAX_FETCHES round trips in `budget_s`."""
        changes: list[Document] = []
        until, fetches = time.monotonic() + budget_s, 0
        while time.monotonic() < until and not self.stop_event.is_set():
            if not is_buffered(stream):
                if fetches == MAX_FETCHES:
                    break
                fetches += 1
            asked = time.monotonic()
            change = stream.try_next()  # waits up to AWAIT_S on an empty stream
            if change is None:
                # An empty batch back early means writes elsewhere moved the server's clock; asking again
                # at once would cost the server one getMore per write anywhere.
                if idle and not changes:
                    self.stop_event.wait(max(0.0, AWAIT_S - (time.monotonic() - asked)))
                break
            changes.append(change)
            if change["operationType"] == "invalidate":
                break
        return changes

    def stop(self) -> None:
        self.stop_event.set()
