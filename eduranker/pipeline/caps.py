"""At most `cap` reactions per user per UTC day count toward training, so one account cannot swing
the labels. The user is `user_queries.user_id`; an anonymous search is a group of its own (its
`query_id`), since nothing ties two anonymous searches to one person. Within a group and day the
earliest reactions count (by `feedback_at`, else `created_at`, then id): a later flood never displaces
them, so the labels already judged on stay put. Malformed feedback passes through uncounted (the
snapshot skips it).

The job reads feedback newest first (`by_day`): a day's reactions are capped once the whole day has
been read, so the read only ever stops between two days, and each day keeps the reactions that capping
every row at once (`apply`) keeps (a test checks). Rows read after that stream (`rest`: feedback the
newest-first read cannot place in time, read only when the job reads everything) count after the
reactions already counted for their group and day.

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


Row = Mapping[str, Any]
GroupDay = tuple[str, str]


class ReactionCap:
    """Filters joined feedback rows; `cap` 0 keeps everything. Rows are already clipped by the store."""

    def __init__(self, cap: int):
        self.cap = cap
        self.dropped = 0
        self.group_days_capped = 0
        self.user_days_capped = 0
        self.largest = 0
        self._seen: dict[GroupDay, int] = {}  # reactions counted so far per group and day (by_day, rest)

    def apply(self, rows: Iterable[Row]) -> Iterator[Row]:
        """Every row at once, in the stream's order, less the reactions over the cap. Holds the rows
        until the end (the earliest of a group may come last in an unordered stream)."""
        if self.cap <= 0:
            yield from rows
            return
        kept, seen = self._choose(list(rows), {})
        self._count(seen, {})
        yield from kept

    def by_day(self, rows: Iterable[Row]) -> Iterator[tuple[list[Row], Row | None]]:
        """Rows that arrive newest first, day after day → (a day's rows less the reactions over the cap,
        the first row of the next day or None at the end), once the day is complete: a read can stop
        there having read one row of the next day. `cap` 0: each row on its own, with the row after it."""
        stream = iter(rows)
        current = next(stream, None)
        while current is not None:
            members, day = [current], day_of(current)
            following = next(stream, None)
            while self.cap > 0 and following is not None and day_of(following) == day:
                members.append(following)
                following = next(stream, None)
            yield (self._counted(members) if self.cap > 0 else members), following
            current = following

    def rest(self, rows: Iterable[Row]) -> Iterator[Row]:
        """Rows read after the newest-first stream, all together: each group and day keeps what is left
        of its allowance after the reactions `by_day` already counted."""
        if self.cap <= 0:
            yield from rows
            return
        yield from self._counted(list(rows))

    def _counted(self, rows: list[Row]) -> list[Row]:
        kept, seen = self._choose(rows, self._seen)
        self._count(seen, self._seen)
        self._seen.update(seen)
        return kept

    def _choose(self, rows: list[Row], earlier: dict[GroupDay, int]) -> tuple[list[Row], dict[GroupDay, int]]:
        """The rows kept, in their order, and each group and day's count of reactions with these rows."""
        kept = [True] * len(rows)
        groups: dict[GroupDay, list[tuple[datetime, str, int]]] = defaultdict(list)
        for index, row in enumerate(rows):
            feedback = row.get("feedback")
            if isinstance(feedback, str) and feedback in REACTIONS:  # bad data may hold a list or a dict
                groups[(group_of(row), day_of(row))].append((_when(row), str(row.get("_id")), index))
        seen: dict[GroupDay, int] = {}
        for group_day, members in groups.items():
            before = earlier.get(group_day, 0)
            allowance = max(self.cap - before, 0)
            if len(members) > allowance:
                members.sort(key=lambda m: (m[0], m[1]))
                for *_, index in members[allowance:]:
                    kept[index] = False
            seen[group_day] = before + len(members)
        return [row for row, keep in zip(rows, kept, strict=True) if keep], seen

    def _count(self, seen: dict[GroupDay, int], earlier: dict[GroupDay, int]) -> None:
        for (group, day), after in seen.items():
            before = earlier.get((group, day), 0)
            self.largest = max(self.largest, after)
            self.dropped += max(after - self.cap, 0) - max(before - self.cap, 0)
            if after > self.cap >= before:
                self.group_days_capped += 1
                self.user_days_capped += group.startswith("user:")

    def report(self) -> dict[str, int]:
        """What the snapshot records as `capped` (counts only: no user ids are copied into the job)."""
        return {
            "max_reactions_per_user_per_day": self.cap,
            "reactions_dropped": self.dropped,
            "group_days_capped": self.group_days_capped,
            "user_days_capped": self.user_days_capped,
            "largest_group_day": self.largest,
        }
