"""Joined feedback rows → clean, deduplicated (query, document, label) pairs (the split: `split.py`).

Pure functions: rows in, pairs out. No database, no Celery.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eduranker.pipeline.text import LATEST, clean_text, query_key
from eduranker.records import LABELS, SnapshotSummary

__all__ = ["SKIP_REASONS", "Pair", "Snapshot", "SnapshotBuilder", "build_snapshot", "classify_row", "clean_text",
           "query_key"]  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pair:
    inference_id: str
    query_id: str
    resource_id: str
    query: str
    document: str
    label: float
    feedback_at: datetime
    slice: str | None = None  # the resource's slice (e.g. its subject), for per-slice gating


@dataclass
class Snapshot:
    pairs: list[Pair]
    rows_seen: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates_superseded: int = 0
    texts_truncated: int = 0
    future_dated: int = 0  # usable pairs whose feedback was dated after the snapshot's now (taken as now)
    # (the pairs list it was computed for, its hash): a job summarises its snapshot twice (its own record,
    # the version's), and the hash reads every pair's text.
    _hashed: tuple[list[Pair], str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def label_counts(self) -> dict[str, int]:
        likes = sum(1 for p in self.pairs if p.label == 1.0)
        return {"like": likes, "dislike": len(self.pairs) - likes}

    @property
    def watermark(self) -> datetime | None:
        return max((p.feedback_at for p in self.pairs), default=None)

    @property
    def content_hash(self) -> str:
        """sha256 over the sorted (query, document, label) pairs; computed once per pairs list."""
        if self._hashed is not None and self._hashed[0] is self.pairs:
            return self._hashed[1]
        digest = hashlib.sha256()
        for line in sorted(f"{p.query}\x1f{p.document}\x1f{p.label}" for p in self.pairs):
            digest.update(line.encode("utf-8", "replace"))
            digest.update(b"\n")
        self._hashed = (self.pairs, digest.hexdigest())
        return self._hashed[1]

    def summary(self) -> SnapshotSummary:
        return {
            "rows_seen": self.rows_seen,
            "pairs": len(self.pairs),
            "label_counts": self.label_counts,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "duplicates_superseded": self.duplicates_superseded,
            "texts_truncated": self.texts_truncated,
            "future_dated": self.future_dated,
            "content_hash": self.content_hash,
            "watermark": self.watermark,
        }


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_object_id(value: Any) -> bool:
    return type(value).__name__ == "ObjectId"


# The structural checks of a joined row, in order: (skip reason, the row is fine when this holds).
_ROW_CHECKS: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...] = (
    ("invalid_feedback", lambda r: isinstance(r.get("feedback"), str) and r["feedback"] in LABELS),
    ("invalid_query_id", lambda r: _is_object_id(r.get("query_id"))),
    ("invalid_resource_id", lambda r: _is_object_id(r.get("resource_id"))),
    ("missing_query", lambda r: bool(r.get("query_found"))),
    ("missing_resource", lambda r: bool(r.get("resource_found"))),
    ("query_text_not_string", lambda r: r.get("query_text_type") == "string"),
    ("title_not_string", lambda r: r.get("title_type") == "string"),
    ("description_not_string", lambda r: r.get("description_type") in ("string", "missing", "null")),
)


# Every reason a row can be skipped for (the snapshot's `skipped` counts use these names).
SKIP_REASONS = (*(reason for reason, _ in _ROW_CHECKS), "empty_query_text", "empty_title")


def _feedback_time(row: Mapping[str, Any], now: datetime | None) -> datetime:
    """When the feedback was set: feedback_at, else created_at, else the id's time; never after `now`
    (a skewed client clock: feedback from the future is taken as now)."""
    when = _aware(row.get("feedback_at")) or _aware(row.get("created_at"))
    if when is None:
        when = _aware(getattr(row.get("_id"), "generation_time", None)) or _EPOCH
    return now if now is not None and when > now else when


def _slice_of(value: Any) -> str | None:
    """A resource's slice as a short label; absent, empty or non-scalar values have none."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    label = clean_text(str(value))[:100]
    return label or None


def classify_row(
    row: Mapping[str, Any], max_text_chars: int, now: datetime | None = None
) -> tuple[Pair | None, str | None, bool]:
    """One joined row → (pair, None, truncated) or (None, skip reason, False)."""
    for reason, holds in _ROW_CHECKS:
        if not holds(row):
            return None, reason, False
    query = clean_text(row["query_text"] or "")
    if not query:
        return None, "empty_query_text", False
    title = clean_text(row["title"] or "")
    if not title:
        return None, "empty_title", False
    description = clean_text(row.get("description") or "")
    document = f"{title}\n\n{description}" if description else title
    longest = max(row.get("query_text_length") or 0, row.get("document_length") or 0)
    pair = Pair(
        inference_id=str(row.get("_id")),
        query_id=str(row["query_id"]),
        resource_id=str(row["resource_id"]),
        query=query,
        document=document,
        label=LABELS[row["feedback"]],
        feedback_at=_feedback_time(row, now),
        slice=_slice_of(row.get("slice")),
    )
    return pair, None, longest > max_text_chars


class SnapshotBuilder:
    """Builds a snapshot one joined row at a time: cleans it, counts what is skipped and why, and keeps
    the latest feedback per (query, resource) whatever order the rows come in (by feedback time, then
    inference id). With `heldout` (a query's side of the stable split) it also counts the distinct pairs
    on each side, so a read newest first knows when it holds what the caps can use
    (`eduranker/pipeline/bounds.py`). Feedback dated after `now` counts as given at `now`. Two rows are
    one query when their `query_key` (of `key_version`, the split's: `eduranker/pipeline/text.py`) is."""

    def __init__(
        self,
        max_text_chars: int,
        now: datetime,
        heldout: Callable[[str], bool] | None = None,
        key_version: int = LATEST,
    ):
        self.max_text_chars, self.now, self.key_version = max_text_chars, now, key_version
        self.snapshot = Snapshot(pairs=[])
        self.latest: dict[tuple[str, str], Pair] = {}
        self.train = 0  # distinct pairs (after deduplication) on the training side, with `heldout`
        self.heldout = 0  # and on the held-out side
        self._is_heldout = heldout
        self._sides: dict[str, bool] = {}  # query key -> held out

    def time_of(self, row: Mapping[str, Any]) -> datetime:
        """The feedback time this row's pair would carry (never after `now`)."""
        return _feedback_time(row, self.now)

    def add(self, row: Mapping[str, Any]) -> None:
        snapshot = self.snapshot
        snapshot.rows_seen += 1
        pair, reason, truncated = classify_row(row, self.max_text_chars, self.now)
        if pair is None:
            snapshot.skipped[reason or "unknown"] += 1
            return
        snapshot.texts_truncated += truncated
        snapshot.future_dated += pair.feedback_at == self.now and _feedback_time(row, None) > self.now
        query = query_key(pair.query, self.key_version)
        key = (query, pair.resource_id)
        kept = self.latest.get(key)
        if kept is None:
            self.latest[key] = pair
            self._count_side(query, pair.query)
            return
        snapshot.duplicates_superseded += 1
        if (pair.feedback_at, pair.inference_id) > (kept.feedback_at, kept.inference_id):
            self.latest[key] = pair

    def _count_side(self, query: str, text: str) -> None:
        if self._is_heldout is None:
            return
        side = self._sides.get(query)
        if side is None:
            side = self._sides[query] = self._is_heldout(text)
        if side:
            self.heldout += 1
        else:
            self.train += 1

    def build(self) -> Snapshot:
        """The snapshot: its pairs oldest first (by feedback time, then inference id)."""
        self.snapshot.pairs = sorted(self.latest.values(), key=lambda p: (p.feedback_at, p.inference_id))
        return self.snapshot


def build_snapshot(rows: Iterable[Mapping[str, Any]], max_text_chars: int, now: datetime | None = None) -> Snapshot:
    """Clean every row, count what is skipped and why, keep the latest feedback per (query, resource).
    Feedback dated after `now` (default: the start of the snapshot) counts as given at `now`."""
    builder = SnapshotBuilder(max_text_chars, now or datetime.now(UTC))
    for row in rows:
        builder.add(row)
    return builder.build()
