"""The one clock that processes compare: the database server's.

Heartbeats, sends, cutoffs, lease expiry and the feedback window's upper bound are all compared across
processes, possibly on different hosts; a host clock that is minutes off would requeue healthy jobs or
let a standby take a live lease. So every such time is either stamped by the server (`$$NOW` in an
update pipeline: `SERVER_NOW`) or read from it (`server_now`, the `localTime` of `hello`). Host clocks
only measure this process's own intervals (monotonic) and label logs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from eduranker.store.types import Db

# In an update pipeline, the server's time of this operation.
SERVER_NOW = "$$NOW"


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime: `connect`'s client returns them aware; a client opened
    without `tz_aware` returns the same UTC instant naive."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def server_now(db: Db) -> datetime:
    """The server's current time (one `hello` round trip), tz-aware UTC, millisecond resolution."""
    return as_utc(db.client.admin.command("hello")["localTime"])


def literal(fields: dict[str, Any]) -> dict[str, Any]:
    """Values for a `$set` stage of an update pipeline taken as they are (no `$` expression inside a
    value is evaluated)."""
    return {name: {"$literal": value} for name, value in fields.items()}


def server_minus(seconds: float) -> dict[str, Any]:
    """An aggregation expression for the server's now minus `seconds` (in an update pipeline)."""
    return {"$subtract": [SERVER_NOW, int(seconds * 1000)]}


def age(since: datetime, now: datetime) -> timedelta:
    return now - as_utc(since)


class ServerClock:
    """The server's now without a round trip per call: read from the server at most every `refresh_s`
    and carried forward by this process's monotonic clock (which measures only this process's own
    elapsed time, so a host's wall clock, however far off, never enters)."""

    def __init__(self, db: Db, refresh_s: float = 5.0):
        self.db, self.refresh_s = db, refresh_s
        self._read: tuple[datetime, float] | None = None  # (server time, monotonic when read)

    def now(self) -> datetime:
        mono = time.monotonic()
        if self._read is None or mono - self._read[1] >= self.refresh_s:
            sent = time.monotonic()
            at = server_now(self.db)
            # The reply's time lies between sending and receiving: take the middle.
            self._read = (at, (sent + time.monotonic()) / 2)
            mono = time.monotonic()
        at, read_at = self._read
        return at + timedelta(seconds=mono - read_at)

    def read(self) -> datetime:
        """A fresh read, for a decision that must not lean on the carried time."""
        self._read = None
        return self.now()
