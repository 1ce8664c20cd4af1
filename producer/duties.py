"""The leader's housekeeping as a list of small duties, each on its own interval, each failure contained.

A duty that raises is logged and counted, its error is kept (and stored in `producer_state.duties`,
which `eduranker status` shows), and the next duty runs anyway: one broken thing (a champion record
naming a version that is gone, an unreadable models volume, a refused command) never stops the others,
nor the producer. Only `stop_on` exceptions (the lease lost) leave the loop; `before_each` checks the
lease before every duty.

Intervals are measured on this process's monotonic clock: they say how often this process acts, never
compare a time with another process. Each duty gets the database server's now, read once per pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Duty:
    name: str
    interval_s: float
    run: Callable[[datetime], object]
    due_at: float = 0.0  # monotonic; 0 runs it at the first pass
    runs: int = 0
    failures: int = 0  # in a row; 0 after a success
    failures_total: int = 0
    last_error: str | None = None
    last_ok_at: datetime | None = None  # server time
    last_failed_at: datetime | None = None  # server time

    def report(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failures": self.failures,
            "failures_total": self.failures_total,
            "last_error": self.last_error,
            "last_ok_at": self.last_ok_at,
            "last_failed_at": self.last_failed_at,
        }


@dataclass
class Duties:
    """The duties in the order they run. `stop_on`: exceptions that are not a duty's failure but the
    loop's end (this producer no longer leads)."""

    stop_on: tuple[type[BaseException], ...] = ()
    duties: list[Duty] = field(default_factory=list)
    # Called before each duty: renews the lease when due and raises (a `stop_on` exception) once it is
    # lost, so no duty starts after the lease lapsed, however long the ones before it took.
    before_each: Callable[[], object] | None = None

    def add(self, name: str, interval_s: float, run: Callable[[datetime], object]) -> Duty:
        if any(d.name == name for d in self.duties):
            raise ValueError(f"duty {name!r} already added")
        duty = Duty(name, interval_s, run)
        self.duties.append(duty)
        return duty

    def get(self, name: str) -> Duty:
        return next(d for d in self.duties if d.name == name)

    def due(self, monotonic: float | None = None) -> list[Duty]:
        at = time.monotonic() if monotonic is None else monotonic
        return [d for d in self.duties if at >= d.due_at]

    def run_due(self, server_now: datetime) -> list[Duty]:
        """Run every duty that is due; returns those that failed this pass."""
        failed = []
        for duty in self.due():
            if self.before_each is not None:
                self.before_each()
            duty.due_at = time.monotonic() + duty.interval_s
            if not self._run_one(duty, server_now):
                failed.append(duty)
        return failed

    def _run_one(self, duty: Duty, server_now: datetime) -> bool:
        duty.runs += 1
        try:
            duty.run(server_now)
        except self.stop_on:
            raise
        except Exception as exc:  # contained by design: the next duty, and the producer, go on
            duty.failures += 1
            duty.failures_total += 1
            duty.last_error = f"{type(exc).__name__}: {exc}"[:500]
            duty.last_failed_at = server_now
            log.warning("housekeeping duty %s failed (%d in a row): %s", duty.name, duty.failures, duty.last_error,
                        exc_info=duty.failures == 1)  # fmt: skip
            return False
        if duty.failures:
            log.info("housekeeping duty %s works again after %d failures", duty.name, duty.failures)
        duty.failures, duty.last_error, duty.last_ok_at = 0, None, server_now
        return True

    def report(self) -> dict[str, dict[str, Any]]:
        """What `producer_state.duties` holds: per duty, runs, failures and the last error."""
        return {d.name: d.report() for d in self.duties}

    def failing(self) -> list[Duty]:
        return [d for d in self.duties if d.failures]


def describe_failures(report: dict[str, Any] | None) -> list[str]:
    """Lines for `eduranker status`: each duty whose last run failed, with its error, from the stored
    report (`producer_state.duties`)."""
    lines = []
    for name, entry in sorted((report or {}).items()):
        if entry.get("failures"):
            lines.append(
                f"{name}: FAILING ({entry['failures']} in a row, {entry.get('failures_total', 0)} in all; "
                f"last ok {entry.get('last_ok_at') or 'never'}): {entry.get('last_error')}"
            )
    return lines
