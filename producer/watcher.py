"""The producer's loop: lead (a lease), follow the change stream, evaluate, keep house.

Every event batch (at least every `max_batch_s` under a stream that never pauses, and every idle tick)
is an evaluation, and an evaluation reads only what could change its answer: the job history at most
once a second (with housekeeping), the counts of the trigger window only when the events since the
last count could have crossed the threshold (`producer/trigger_state.py`), and both again, fresh, before
it enqueues. The producer's state is written when the decision changes, and otherwise only as often as
its readers need (`producer/state_writer.py`): the resume token within a few seconds of the events it
covers (a restart replays at most those, harmlessly: job ids derive from the feedback watermark), and
`evaluated_at` at a liveness interval the lag alert allows for.

The parts: `trigger_state.py` (what is remembered of the window, pure), `stream.py` (the change stream
and the evaluations' pacing), `housekeeping.py` (the duties), `state_writer.py` (when the state is
written, and what it holds), `policy.py` (the decision, pure).
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

from eduranker.records import TriggerDoc
from eduranker.settings import Settings
from eduranker.store import ensure_indexes, jobs
from eduranker.store.clock import ServerClock
from eduranker.store.connection import CommandCounter
from eduranker.store.feedback import latest_feedback_at
from eduranker.store.lease import Lease, LeaseFence, LeaseLapsed
from eduranker.store.online import ensure_online_indexes
from eduranker.store.types import Db
from producer.backoff import back_off_leading
from producer.duties import Duties
from producer.history import read_history
from producer.housekeeping import HOUSEKEEPING_S, DutiesReport, add_duties
from producer.outbox import enqueue, job_id_for
from producer.policy import Decision, JobHistory, Thresholds, decide, waiting_decision
from producer.state import load_state, save_state
from producer.state_writer import StateWrites, state_fields
from producer.stream import RESUME_FAILED_CODES, Pacing, drain, open_stream
from producer.trigger import read_counts
from producer.trigger_state import Count, TriggerState, count_cap

log = logging.getLogger(__name__)


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
        self.thresholds = settings.config(Thresholds)
        self.idle_eval_s, self.max_batch_s = idle_eval_s, max_batch_s
        self.stop_event = threading.Event()
        self.watching = threading.Event()  # set while leading with a change stream open (readiness)
        self.lease = Lease(db, holder or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                           settings.producer_lease_seconds)  # fmt: skip
        self.clock = ServerClock(db)  # the one clock the producer compares times with: the server's
        # A broker outage never holds the leader past its lease: sending gives up after a fifth of it
        # (at most 2 s); the job stays recorded unsent and the next pass sends it.
        self.send_budget_s = min(2.0, settings.producer_lease_seconds / 5)
        # Every duty starts only while the lease is held (renewed when due); the guard's writes are fenced
        # by the lease's term.
        duties = Duties(stop_on=(LeaseLost, LeaseLapsed), before_each=self.leading)
        self.duties = add_duties(duties, settings, db, app, send_budget_s=self.send_budget_s, lease=self.leading)
        self.duties_report = DutiesReport(db, self.duties)
        self.trigger = TriggerState(self.thresholds, idle_eval_s)
        self.history: JobHistory | None = None  # read with housekeeping, and before every enqueue
        self.housekept_at = 0.0  # monotonic
        self.commands = commands or CommandCounter()  # what this process costs the database (if counted)
        # Shown in `producer_state` and `eduranker status`.
        self.events_seen, self.evaluations, self.loop_failures = 0, 0, 0
        self.last_read_s = 0.0  # how long the last evaluation's reads took
        self.state_writes = StateWrites()
        self.indexed, self.standby_logged = False, False

    def leading(self) -> LeaseFence:
        """The lease's fence while this producer leads (renewed when due); LeaseLost once it does not."""
        if not self.lease.keep():
            raise LeaseLost("lease lost during housekeeping")
        return self.lease.fence()

    def housekeeping(self, now: datetime) -> None:
        """The duties that are due (producer/housekeeping.py), then the job history. `now` is the
        database server's."""
        failed = self.duties.run_due(now)
        self.duties_report.after_pass(failed)
        self.history = self._read_history()
        self.housekept_at = time.monotonic()

    def _read_history(self) -> JobHistory:
        return read_history(self.db, self.thresholds.retry_limit)

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
        self.trigger.saw(events)
        self.evaluations += 1
        history_read_now = self._refresh_history(now, began)
        assert self.history is not None
        decision, count = self._decide(self.history, now, fresh=False)
        if decision.train:
            # Acting on a second-old history could start a job beside one just started: read both again.
            if not history_read_now:
                self.history = self._read_history()
            decision, count = self._decide(self.history, now, fresh=True)
        self.last_read_s = time.monotonic() - began
        if decision.train and count is not None:
            self._enqueue(decision, self.history, count, now)
            self.history = self._read_history()
        self._write_state(decision, count, now, events, events_until, resume_token)
        return decision

    def _refresh_history(self, now: datetime, at: float) -> bool:
        """Housekeeping when it is due; otherwise the history again only if the slot freed. True when the
        history was read now."""
        if at - self.housekept_at >= HOUSEKEEPING_S or self.history is None:
            self.housekeeping(now)
            return True
        if self.history.active is not None and jobs.active_job(self.db) is None:
            # The slot freed since the last read: one indexed find per evaluation while a job is active,
            # so the next job may start at the next crossing, not at the next housekeeping.
            self.history = self._read_history()
            return True
        return False

    def _decide(self, history: JobHistory, now: datetime, *, fresh: bool) -> tuple[Decision, Count | None]:
        waiting = waiting_decision(history, self.thresholds, now)
        if waiting is not None:  # while a job is active or cooling down no count can change the answer
            return waiting, None
        # The progress shown (state, log) lags the events by at most one idle interval; the answer by none.
        if self.trigger.must_count(history, time.monotonic(), fresh=fresh):
            # The window ends at the server's now read just before counting (not the evaluation's start):
            # every event seen so far was written before it, so none on time is left out of this count.
            until = max(now, self.clock.read())
            cap = count_cap(history, self.thresholds, fresh=fresh)
            counts = read_counts(self.db, history, cap=cap, until=until)
            after_events = self.trigger.uncounted_events > 0
            self.trigger.counted(Count(history.window_since, counts, until, time.monotonic(), cap, after_events))
        count = self.trigger.last_for(history)
        assert count is not None
        return decide(count.counts, history, self.thresholds, now), count

    def _write_state(
        self,
        decision: Decision,
        count: Count | None,
        now: datetime,
        events: int,
        events_until: datetime | None,
        resume_token: Mapping[str, Any] | None,
    ) -> None:
        if not self.state_writes.due(decision, count, events):
            return
        if not self.lease.held():  # a leader that outlived its lease (a stall) writes no state
            raise LeaseLost("lease lost before writing the state")
        state = state_fields(decision, count, now, events_until=events_until, resume_token=resume_token)
        # The duties' report rides along (their failures are stored at once, producer/housekeeping.py).
        save_state(self.db, **state, leader=self.lease.holder, events_seen=self.events_seen,
                   evaluations=self.evaluations, db_commands=dict(self.commands.by_name),
                   duties=self.duties.report())  # fmt: skip
        self.state_writes.written(decision, count)

    def _enqueue(self, decision: Decision, history: JobHistory, count: Count, now: datetime) -> None:
        if decision.retry_of is not None:
            watermark = decision.retry_of.watermark
            job_id = job_id_for(watermark, decision.retry_of.failures, self.settings.index_spec)
        else:
            # The window ended at the server's now: feedback a skewed client dated later was not counted,
            # and the watermark is never beyond it, so that feedback is counted once its time comes.
            newest = latest_feedback_at(self.db, since=history.window_since, until=count.until) or count.until
            watermark = min(newest, count.until)
            job_id = job_id_for(watermark, index=self.settings.index_spec)
        # The fresh count is uncapped (trigger_state.count_cap): its split is the window's own.
        counts = {"like": count.counts.likes, "dislike": count.counts.dislikes}
        trigger: TriggerDoc = {
            "reason": decision.reason,
            "source": "producer",
            "watermark": watermark,
            "counts": counts,
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
            except (LeaseLost, LeaseLapsed) as exc:
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
            back_off_leading(self, backoff, every_s=min(self.idle_eval_s, self.lease.seconds / 3))  # still leading
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
        self.history = None
        self.trigger.forget()
        self.state_writes.forget()
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
        with open_stream(self.db, resume_token) as stream:
            pacing, newest = Pacing(self.max_batch_s, self.idle_eval_s, last_eval=time.monotonic()), None
            self.watching.set()
            while not self.stop_event.is_set():
                if not self.lease.keep():
                    raise LeaseLost("lease lost while watching")
                self.stop_event.wait(pacing.wait_s(time.monotonic()))
                changes = drain(stream, self.stop_event, budget_s=pacing.gap, idle=not pacing.pending)
                self.events_seen += len(changes)
                pacing.pending += len(changes)
                if changes:
                    newest = changes[-1].get("wallTime") or newest
                    if changes[-1]["operationType"] == "invalidate":
                        log.warning("change stream invalidated; recounting")
                        self.trigger.forget()
                        self.evaluate()
                        save_state(self.db, resume_token=None)
                        return
                if pacing.due(time.monotonic()):
                    # The token covers every event read so far, all of them in this evaluation; the
                    # liveness writes of idle evaluations save it too, so an idle stream's token never
                    # goes stale.
                    self.evaluate(events=pacing.pending, events_until=newest, resume_token=stream.resume_token)
                    pacing.evaluated(time.monotonic(), self.last_read_s)
            if not pacing.pending:  # every event read was evaluated: the stream's token covers them
                self._save_position(stream.resume_token, newest)

    def _save_position(self, resume_token: Mapping[str, Any] | None, events_until: datetime | None) -> None:
        """At a clean stop, the position of events evaluated but not saved yet (`EVENTS_WRITE_S`)."""
        if not self.state_writes.unsaved_events or resume_token is None or not self.lease.held():
            return
        fields = {"resume_token": resume_token, "events_seen": self.events_seen, "evaluations": self.evaluations}
        if events_until is not None:
            fields["last_event_wall_time"] = events_until
        save_state(self.db, **fields)
        self.state_writes.unsaved_events = 0

    def stop(self) -> None:
        self.stop_event.set()
