"""At most `cap` reactions per user per UTC day count toward training, so one account cannot swing
the labels. The user is `user_queries.user_id`; an anonymous search is a group of its own (its
`query_id`), since nothing ties two anonymous searches to one person. Within a group and day the
earliest reactions count (by `feedback_at`, then id): a later flood never displaces them, so the
labels already judged on stay put. Malformed feedback passes through uncounted (the snapshot skips it).

Pure: rows in, rows out; `ReactionCap.report()` says what was dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

REACTIONS = frozenset({"like", "dislike"})
_NEVER = datetime.min.replace(tzinfo=UTC)


def group_of(row: Mapping[str, Any]) -> str:
    """`user:<id>` for a logged-in user, `anonymous:<query_id>` for an anonymous search."""
    user = row.get("user_id")
    if user is None or user == "":
        return f"anonymous:{row.get('query_id')}"
    return f"user:{user}"


def _when(row: Mapping[str, Any]) -> datetime:
    value = row.get("feedback_at")
    if not isinstance(value, datetime):
        value = row.get("created_at")
    if not isinstance(value, datetime):
        return _NEVER
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def day_of(row: Mapping[str, Any]) -> str:
    when = _when(row)
    return "undated" if when == _NEVER else when.astimezone(UTC).date().isoformat()


class ReactionCap:
    """Filters joined feedback rows; `cap` 0 keeps everything. Holds the rows until the end (the
    earliest of a group may come last in the stream); rows are already clipped by the store."""

    def __init__(self, cap: int):
        self.cap = cap
        self.dropped = 0
        self.group_days_capped = 0
        self.user_days_capped = 0
        self.largest = 0

    def apply(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        if self.cap <= 0:
            yield from rows
            return
        kept: list[tuple[int, Mapping[str, Any]]] = []
        groups: dict[tuple[str, str], list[tuple[datetime, str, int, Mapping[str, Any]]]] = defaultdict(list)
        for index, row in enumerate(rows):
            feedback = row.get("feedback")
            if isinstance(feedback, str) and feedback in REACTIONS:  # bad data may hold a list or a dict
                groups[(group_of(row), day_of(row))].append((_when(row), str(row.get("_id")), index, row))
            else:
                kept.append((index, row))
        for (group, _day), members in groups.items():
            self.largest = max(self.largest, len(members))
            if len(members) > self.cap:
                members.sort(key=lambda m: (m[0], m[1]))
                self.dropped += len(members) - self.cap
                self.group_days_capped += 1
                self.user_days_capped += group.startswith("user:")
            kept.extend((index, row) for _w, _i, index, row in members[: self.cap])
        kept.sort(key=lambda item: item[0])  # the stream's order, for whatever comes next
        yield from (row for _index, row in kept)

    def report(self) -> dict[str, int]:
        """What the snapshot records as `capped` (counts only: no user ids are copied into the job)."""
        return {
            "max_reactions_per_user_per_day": self.cap,
            "reactions_dropped": self.dropped,
            "group_days_capped": self.group_days_capped,
            "user_days_capped": self.user_days_capped,
            "largest_group_day": self.largest,
        }
