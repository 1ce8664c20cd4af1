"""A job's size caps: the newest pairs up to TRAIN_MAX_PAIRS for training, GATE_MAX_PAIRS for the gate,
and the snapshot's read that stops once it holds what those caps can use.

Pure functions: pairs in, the kept pairs and what was left out back; rows in, a snapshot and a record of
how much was read. Newest first, because newer feedback describes today's users and documents best, and
a cap by recency keeps a job the same size however many years of feedback there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eduranker.pipeline.pairs import Pair, SnapshotBuilder


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


def read_enough(train: int, heldout: int, train_cap: int, gate_cap: int) -> bool:
    """Whether a snapshot read newest first holds what the caps can use: at least `train_cap` distinct
    training-side pairs and `gate_cap` distinct held-out pairs. A cap of 0 is no cap: never full."""
    return 0 < train_cap <= train and 0 < gate_cap <= heldout


@dataclass(frozen=True)
class Read:
    """How much of the feedback a snapshot read, and why it stopped there."""

    stopped_early: bool
    train_pairs: int  # distinct pairs on each side of the split when the read ended
    heldout_pairs: int
    train_cap: int
    gate_cap: int
    unread_from: datetime | None = None  # a read stopped early read nothing dated at or before this

    def report(self) -> dict[str, Any]:
        if self.stopped_early:
            why = "both caps reached: older feedback could not change the pairs kept"
        elif self.train_cap <= 0 or self.gate_cap <= 0:
            why = "no cap (TRAIN_MAX_PAIRS or GATE_MAX_PAIRS is 0): every feedback read"
        else:
            why = "every feedback read: it holds fewer pairs than the caps on one side at least"
        return {
            "order": "newest_first" if self.train_cap > 0 and self.gate_cap > 0 else "all",
            "stopped_early": self.stopped_early,
            "why": why,
            "train_pairs": self.train_pairs,
            "heldout_pairs": self.heldout_pairs,
            "train_cap_reached": 0 < self.train_cap <= self.train_pairs,
            "gate_cap_reached": 0 < self.gate_cap <= self.heldout_pairs,
            "unread_from": self.unread_from,
        }


def read_newest_first(
    units: Iterable[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any] | None]],
    rest: Callable[[], Iterable[Mapping[str, Any]]],
    builder: SnapshotBuilder,
    train_cap: int,
    gate_cap: int,
) -> Read:
    """Feed `builder` the rows of `units` until it holds what the caps can use (`read_enough`). Each unit
    is (rows, the row that follows them or None at the end), newest first by feedback time; a read can
    stop only between units (one row, or with the reaction cap a whole day) and only where the feedback
    time strictly drops: every row left unread is then older than every row read, so each (query,
    resource) read keeps the label that reading everything would give it, and each side's newest pairs
    are the same. When the units run out first, `rest()` (feedback the newest-first read cannot place in
    time) is read too."""
    last: datetime | None = None
    for unit, following in units:
        for row in unit:
            builder.add(row)
        if unit:
            last = builder.time_of(unit[-1])
        if following is None or last is None or builder.time_of(following) >= last:
            continue
        if read_enough(builder.train, builder.heldout, train_cap, gate_cap):
            return Read(True, builder.train, builder.heldout, train_cap, gate_cap, builder.time_of(following))
    for row in rest():
        builder.add(row)
    return Read(False, builder.train, builder.heldout, train_cap, gate_cap)
