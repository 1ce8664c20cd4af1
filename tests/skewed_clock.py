"""Imported first in a child process, shifts its host clock by SKEWED_CLOCK_SECONDS: `time.time`,
`time.time_ns` and `datetime.datetime.now`/`utcnow`/`today` (what the code would use if it trusted its
host's clock). Monotonic clocks are left alone: they measure only this process's own intervals.
(libfaketime would do the same from outside, but its interposed sleeps fail under CPython 3.11.)

    python -c "import tests.skewed_clock; tests.skewed_clock.run_module('producer')"
"""

from __future__ import annotations

import datetime as _dt
import os
import runpy
import sys
import time

OFFSET_S = float(os.environ.get("SKEWED_CLOCK_SECONDS", "0"))
_OFFSET = _dt.timedelta(seconds=OFFSET_S)
_time, _time_ns = time.time, time.time_ns
_RealDatetime = _dt.datetime


class SkewedDatetime(_RealDatetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return _RealDatetime.now(tz) + _OFFSET

    @classmethod
    def utcnow(cls):  # type: ignore[no-untyped-def, override]
        return _RealDatetime.now(_dt.UTC).replace(tzinfo=None) + _OFFSET

    @classmethod
    def today(cls):  # type: ignore[no-untyped-def, override]
        return cls.now()


time.time = lambda: _time() + OFFSET_S
time.time_ns = lambda: _time_ns() + int(OFFSET_S * 1e9)
_dt.datetime = SkewedDatetime  # type: ignore[misc]


def run_module(name: str) -> None:
    sys.argv = [name, *sys.argv[1:]]
    runpy.run_module(name, run_name="__main__", alter_sys=True)
