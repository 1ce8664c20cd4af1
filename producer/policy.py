"""Should we train now? A pure function of counts, the last job, the thresholds and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Thresholds:
    min_feedback: int = 50
    min_minority: float = 0.2
    new_feedback: int = 100
    cooldown_seconds: float = 600.0


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
class LastJob:
    job_id: str
    status: str
    created_at: datetime
    watermark: datetime | None


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


def waiting_reason(last_job: LastJob | None, thresholds: Thresholds, now: datetime) -> str | None:
    """Why no job may start now whatever the counts (an active job, the cooldown); None if one may."""
    if last_job is not None and last_job.status in ("queued", "running"):
        return f"not yet: job {last_job.job_id} is {last_job.status}"
    if last_job is not None:
        waited = (now - last_job.created_at).total_seconds()
        if waited < thresholds.cooldown_seconds:
            left = thresholds.cooldown_seconds - waited
            return f"not yet: cooldown, {left:.0f} s left after job {last_job.job_id}"
    return None


def is_first_model(last_job: LastJob | None) -> bool:
    return last_job is None or last_job.watermark is None


def decide(counts: FeedbackCounts, last_job: LastJob | None, thresholds: Thresholds, now: datetime) -> Decision:
    waiting = waiting_reason(last_job, thresholds, now)
    if waiting is not None:
        return Decision(False, waiting)

    if is_first_model(last_job):
        progress = f"{counts.total}/{thresholds.min_feedback} feedbacks, minority {counts.minority_share:.2f}"
        if counts.total < thresholds.min_feedback:
            return Decision(False, f"not yet: {progress}")
        if counts.likes == 0 or counts.dislikes == 0:
            return Decision(False, f"not yet: only one class ({progress})")
        if counts.minority_share < thresholds.min_minority:
            return Decision(False, f"not yet: {progress} < {thresholds.min_minority}")
        return Decision(True, f"first model: {progress}")

    progress = f"{counts.total}/{thresholds.new_feedback} new feedbacks since last job"
    if counts.total < thresholds.new_feedback:
        return Decision(False, f"not yet: {progress}")
    return Decision(True, f"retrain: {progress}")
