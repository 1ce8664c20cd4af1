"""What the producer remembers about the trigger window between evaluations, and when to count again.

Pure: no database, no clock of its own. `at` is this process's monotonic time (how often it counts is
this process's business), `until` the database server's now that a count's window ended at (the only
time compared with what other processes wrote). `producer/watcher.py` does the reading.

Counting is bounded for a decision: a retrain asks only "at least `new_feedback` since the watermark?",
so its count stops there (`cap`) and costs the cap, not the backlog. A capped count knows its total,
not its split, so it is never stored as one: the count a job is recorded with is read uncapped
(`fresh`), once per job, and states the true likes and dislikes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from producer.policy import FeedbackCounts, JobHistory, Thresholds, is_first_model, worth_counting

RECOUNT_S = 60.0  # counted at least this often even without events: a restored collection sends none


@dataclass(frozen=True)
class Count:
    """One count of the trigger window."""

    window: datetime | None  # the window's start (the watermark; None: before a first model)
    counts: FeedbackCounts
    until: datetime  # the server's now the window ended at
    at: float  # monotonic time of the count
    cap: int | None = None  # counting stopped at this total
    after_events: bool = False  # made because of change events (not an idle recount)

    @property
    def exact(self) -> bool:
        """Whether the split is the window's own: no cap, or a total below it (nothing left uncounted)."""
        return self.cap is None or self.counts.total < self.cap

    def as_state(self) -> dict[str, object]:
        """The count as `producer_state` stores it: the split when it is exact, else only the total
        reached (the split of a capped count says which label was counted first, nothing more)."""
        if self.exact:
            return {"counts": {"like": self.counts.likes, "dislike": self.counts.dislikes}, "counted_at_least": None}
        return {"counts": None, "counted_at_least": self.counts.total}


def count_cap(history: JobHistory, thresholds: Thresholds, *, fresh: bool) -> int | None:
    """Where a count of the window may stop: a retrain's decision needs `new_feedback` and no more; a
    first model's needs the split (the minority share), and a fresh count is recorded with its job."""
    if fresh or is_first_model(history):
        return None
    return thresholds.new_feedback


@dataclass
class TriggerState:
    thresholds: Thresholds
    idle_eval_s: float  # with events pending, counted at least this often (the progress shown lags by it)
    recount_s: float = RECOUNT_S
    last: Count | None = None
    uncounted_events: int = 0  # change events since the last count

    def saw(self, events: int) -> None:
        self.uncounted_events += events

    def forget(self) -> None:
        """Trust no count from before (another leader may have acted; the stream was invalidated)."""
        self.last = None

    def last_for(self, history: JobHistory) -> Count | None:
        """The last count, if it is of `history`'s trigger window."""
        return self.last if self.last is not None and self.last.window == history.window_since else None

    def must_count(self, history: JobHistory, at: float, *, fresh: bool) -> bool:
        """Whether to read the counts again: asked (`fresh`, before an enqueue), overdue, or the events
        since the last count could have crossed the threshold (`policy.worth_counting`)."""
        last = self.last_for(history)
        if fresh or last is None:
            return True
        since = at - last.at
        if since >= self.recount_s or (self.uncounted_events > 0 and since >= self.idle_eval_s):
            return True
        # Once more an idle interval after a count that events caused: feedback the API dated a few
        # milliseconds past the server's now (its host's clock ahead) was left out of that count, and
        # brings no event of its own when its time comes.
        if last.after_events and since >= self.idle_eval_s:
            return True
        return worth_counting(last.counts, self.uncounted_events, history, self.thresholds)

    def counted(self, count: Count) -> Count:
        self.last, self.uncounted_events = count, 0
        return count
