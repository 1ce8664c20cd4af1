"""Should we train now? A pure function of counts, the job history, the thresholds and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Thresholds:
    """The trigger's config: each field takes the setting it names (`Settings.config(Thresholds)`), whose
    default and check live in eduranker/settings.py alone. A new threshold: a setting, a field here."""

    min_feedback: int = field(metadata={"setting": "train_min_feedback"})
    min_minority: float = field(metadata={"setting": "train_min_minority"})
    new_feedback: int = field(metadata={"setting": "train_new_feedback"})
    cooldown_seconds: float = field(metadata={"setting": "train_cooldown_seconds"})
    retry_limit: int = field(metadata={"setting": "auto_retry_limit"})


@dataclass(frozen=True)
class FeedbackCounts:
    """Usable feedback in the trigger window: all of it for a first model, since the watermark after."""

    likes: int
    dislikes: int

    @property
    def total(self) -> int:
        return self.likes + self.dislikes

    @property
    def minority_share(self) -> float:
        return min(self.likes, self.dislikes) / self.total if self.total else 0.0


@dataclass(frozen=True)
class FailedChain:
    """The newest automatic job failed (or was cancelled): `failures` runs of its trigger so far."""

    job_id: str
    watermark: datetime
    failures: int
    last_failed_at: datetime


@dataclass(frozen=True)
class JobHistory:
    active: tuple[str, str] | None = None  # (job id, status) of the one active job
    last_created_at: datetime | None = None  # newest job of any kind: the cooldown runs from it
    window_since: datetime | None = None  # feedback after this counts; None: no model yet
    failed: FailedChain | None = None
    waiting: str | None = None  # oldest manual job waiting for the slot: it goes before any automatic one
    waiting_automatic: str | None = None  # an automatic job waiting its turn behind manual ones
    active_automatic: bool = False  # whether the active job is an automatic one
    challenger: str | None = None  # a running challenge's challenger: users are judging the last candidate


@dataclass(frozen=True)
class Decision:
    """The answer and its reason. A reason changes only when the decision does: a wait names its end on
    the server's clock (`until`), never a countdown, so the producer's state and log change once per wait."""

    train: bool
    reason: str
    retry_of: FailedChain | None = None
    until: datetime | None = None  # a wait's end (server clock); what is left is `until - now`


def retry_due_at(chain: FailedChain, thresholds: Thresholds) -> float:
    """Seconds after the last failure when the next retry may start: the cooldown, doubling each time."""
    return float(thresholds.cooldown_seconds * 2 ** (chain.failures - 1))


def clock_text(at: datetime) -> str:
    """A server-clock time in a reason: UTC to the second, rounded up (nothing starts before it)."""
    at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    whole = at.replace(microsecond=0)
    if whole < at:
        whole += timedelta(seconds=1)
    return f"{whole:%Y-%m-%d %H:%M:%S} UTC"


def waiting_decision(history: JobHistory, thresholds: Thresholds, now: datetime) -> Decision | None:
    """Why no job may start now whatever the counts (an active job, the cooldown); None if one may.
    While manual jobs wait behind a manual job, a due automatic job joins the queue behind them (no
    cooldown: it starts only after them), so a stream of manual jobs never starves automatic training."""
    if history.waiting_automatic is not None:
        return Decision(False, f"waiting: automatic job {history.waiting_automatic} waits its turn")
    if history.challenger is not None:  # a newer candidate would restart the test: let users finish first
        return Decision(False, f"waiting: users are judging challenger {history.challenger}")
    if history.active is not None and (history.waiting is None or history.active_automatic):
        job_id, status = history.active
        return Decision(False, f"waiting: job {job_id} is {status}")
    if history.waiting is not None:
        return None  # a due automatic job is recorded waiting, behind manual job `history.waiting`
    if history.last_created_at is not None:
        ends = history.last_created_at + timedelta(seconds=thresholds.cooldown_seconds)
        if now < ends:
            return Decision(False, f"waiting: cooldown until {clock_text(ends)}", until=ends)
    return None


def retry_decision(history: JobHistory, thresholds: Thresholds, now: datetime) -> Decision | None:
    """A decision about retrying a failed automatic job, or None when there is nothing to retry."""
    chain = history.failed
    if chain is None or chain.failures > thresholds.retry_limit:
        return None
    due = chain.last_failed_at + timedelta(seconds=retry_due_at(chain, thresholds))
    attempt = f"retry {chain.failures}/{thresholds.retry_limit} of failed job {chain.job_id}"
    if now < due:
        return Decision(False, f"waiting: {attempt} at {clock_text(due)}", until=due)
    return Decision(True, attempt, retry_of=chain)


def is_first_model(history: JobHistory) -> bool:
    return history.window_since is None


def worth_counting(last: FeedbackCounts | None, events_since: int, history: JobHistory, thresholds: Thresholds) -> bool:
    """Whether counting again could turn "not yet" into "train". Each change event adds at most one
    feedback, so while the last count plus the events since stays below the threshold no count can.
    `last` must belong to `history`'s trigger window (None: never counted there)."""
    if last is None:
        return True
    if events_since == 0:
        return False
    needed = thresholds.min_feedback if is_first_model(history) else thresholds.new_feedback
    return last.total + events_since >= needed


def decide(counts: FeedbackCounts, history: JobHistory, thresholds: Thresholds, now: datetime) -> Decision:
    waiting = waiting_decision(history, thresholds, now)
    if waiting is not None:
        return waiting
    retry = retry_decision(history, thresholds, now)
    if retry is not None:
        return retry

    if is_first_model(history):
        progress = f"{counts.total}/{thresholds.min_feedback} feedbacks, minority {counts.minority_share:.2f}"
        if counts.total < thresholds.min_feedback:
            return Decision(False, f"first model at {thresholds.min_feedback} feedbacks: {progress}")
        if counts.likes == 0 or counts.dislikes == 0:
            return Decision(False, f"first model: only one class ({progress})")
        if counts.minority_share < thresholds.min_minority:
            return Decision(False, f"first model: {progress} < {thresholds.min_minority}")
        return Decision(True, f"first model: {progress}")

    progress = f"{counts.total}/{thresholds.new_feedback} new feedbacks"
    if counts.total < thresholds.new_feedback:
        return Decision(False, f"retrain at {thresholds.new_feedback} new feedbacks: {progress}")
    return Decision(True, f"retrain: {progress}")
