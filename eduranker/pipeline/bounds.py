"""A job's size caps: the newest pairs up to TRAIN_MAX_PAIRS for training, GATE_MAX_PAIRS for the gate.

Pure functions: pairs in, the kept pairs and what was left out back. Newest first, because newer
feedback describes today's users and documents best, and a cap by recency keeps a job the same size
however many years of feedback the snapshot holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eduranker.pipeline.pairs import Pair


@dataclass(frozen=True)
class Bounded:
    """The pairs kept under one cap, and a record of what the cap left out."""

    kept: list[Pair]
    cap: int  # 0 = no cap
    offered: int
    oldest_kept: datetime | None

    @property
    def left_out(self) -> int:
        return self.offered - len(self.kept)

    def report(self) -> dict[str, Any]:
        return {
            "cap": self.cap,
            "offered": self.offered,
            "kept": len(self.kept),
            "left_out": self.left_out,
            "oldest_kept": self.oldest_kept.isoformat() if self.oldest_kept and self.left_out else None,
        }


def newest(pairs: list[Pair], cap: int) -> Bounded:
    """At most `cap` pairs (0 = all), the most recently given feedback first; ties by inference id, so
    the choice is the same on every run. The kept pairs keep their input order."""
    if cap <= 0 or len(pairs) <= cap:
        return Bounded(list(pairs), cap, len(pairs), min((p.feedback_at for p in pairs), default=None))
    ranked = sorted(range(len(pairs)), key=lambda i: (pairs[i].feedback_at, pairs[i].inference_id), reverse=True)
    chosen = sorted(ranked[:cap])
    kept = [pairs[i] for i in chosen]
    return Bounded(kept, cap, len(pairs), min(p.feedback_at for p in kept))
