"""The leader's housekeeping: what keeps every job moving, as duties on their own intervals.

Silent runs requeued, lost messages resent, unsent jobs sent, the champion pointer reconciled (each at
most once a second), live metrics refreshed and a running challenge judged (ONLINE_REFRESH_SECONDS), and
the models volume pruned (daily). Each is one duty of `producer/duties.py`, its failure contained;
their report is stored in `producer_state.duties` at once after a failure or a recovery, and otherwise
with the producer's state (`producer/state_writer.py`: when the decision changes, and at least every
`LIVENESS_WRITE_S`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import Celery
from pymongo.errors import PyMongoError

from eduranker import champion, pruning
from eduranker.settings import Settings
from eduranker.store import jobs
from eduranker.store.types import Db
from producer.challenge_refresh import refresh_challenge
from producer.duties import Duties, Duty
from producer.live_comparison import LeaseCheck
from producer.online_refresh import refresh_online
from producer.outbox import send_unsent
from producer.state import save_state
from producer.workers import workers_serving

log = logging.getLogger(__name__)
PRODUCER = "producer"  # who the champion pointer's repairs and retention's deletions are logged as
HOUSEKEEPING_S = 1.0  # requeue, resend, send, reconcile (and the job history's read) at most this often
RETENTION_S = 86400.0  # the models volume grows by a job's folder a retrain: once a day keeps it bounded


def add_duties(
    duties: Duties, s: Settings, db: Db, app: Celery, *, send_budget_s: float, lease: LeaseCheck | None = None
) -> Duties:
    """The housekeeping duties, in the order they run. A new duty: `duties.add(name, interval_s, fn)`
    with `fn(server_now)`. `lease`: renews the leader's lease and returns its fence (raising once it is
    lost); the online guard fences its writes with it."""

    def requeue(now: datetime) -> None:
        for job_id in jobs.requeue_silent(db, silent_after_s=s.job_requeue_after_s, at=now):
            log.warning("job %s: its worker fell silent; requeued (or failed after its last attempt)", job_id)

    def resend(now: datetime) -> None:
        for job_id in jobs.resend_unclaimed(
            db, after_s=s.job_resend_after_seconds, max_sends=s.job_max_resends, at=now,
            worker_alive=lambda: workers_serving(app, s.index_spec.queue),
        ):  # fmt: skip
            log.warning("job %s: not claimed %.0f s after it was sent; resending (or failed)", job_id,
                        s.job_resend_after_seconds)  # fmt: skip

    duties.add("requeue", HOUSEKEEPING_S, requeue)
    duties.add("resend", HOUSEKEEPING_S, resend)
    duties.add("send", HOUSEKEEPING_S, lambda _at: send_unsent(app, db, max_wait_s=send_budget_s))
    # reconcile: a models volume that cannot be read (EACCES, EIO, ESTALE) fails this duty alone.
    duties.add("reconcile", HOUSEKEEPING_S, lambda _at: champion.reconcile(db, s.models_dir, by=PRODUCER))
    duties.add("online", s.online_refresh_seconds, lambda _at: refresh_online(db, s, lease))
    # A running challenge: users' verdict on the challenger, applied only to the state it judged.
    duties.add("challenge", s.online_refresh_seconds, lambda _at: refresh_challenge(db, s, lease))
    # retention (docs/retention.md): old rejected and retired folders, finished jobs' expiry; daily.
    duties.add("retention", RETENTION_S, lambda at: pruning.prune(db, s, now=at, by=PRODUCER))
    return duties


class DutiesReport:
    """Stores the duties' report in `producer_state` at once when a duty failed or works again; the
    rest (runs, the last success) goes with the producer's state."""

    def __init__(self, db: Db, duties: Duties) -> None:
        self.db, self.duties = db, duties
        # The failing duties the stored report shows; a new leader's first state write stores them all.
        self.stored_failing: set[str] = set()

    def after_pass(self, failed: list[Duty]) -> None:
        failing = {d.name for d in self.duties.failing()}
        if not failed and failing == self.stored_failing:
            return
        try:
            save_state(self.db, duties=self.duties.report())
            self.stored_failing = failing
        except PyMongoError:  # shown at the next write; the evaluation's own reads report the outage
            log.warning("could not store the housekeeping duties' state", exc_info=True)
