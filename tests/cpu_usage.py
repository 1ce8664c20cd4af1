"""Where the suite's CPU goes, per test file: `pytest -p tests.cpu_usage` (with or without xdist).

The suite is CPU-bound on two cores, so its wall time follows its CPU time, and a test's own wall time
says little (a test waiting on a redelivery costs nothing). Each test's CPU is that of its process tree:
the test process, the servers it started for the session (each test process has its own, so their work
lands on the test that caused it) and every child it started, including children already reaped. Each
test process appends `nodeid, CPU s, wall s` to `build/cpu-usage/<worker>.tsv`; the run ends with the
files that took the most CPU. Linux only (/proc).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OUT = Path(__file__).resolve().parent.parent / "build" / "cpu-usage"
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone meanwhile
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every live descendant (a reaped child's time is in its parent's)."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p)) is not None}
    total = 0.0
    for pid, (_, cpu) in stats.items():
        up = pid
        while up != root and up in stats and up > 1:
            up = stats[up][0]
        total += cpu if up == root else 0.0
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    cpu, wall = tree_cpu(os.getpid()), time.monotonic()
    yield
    cpu, wall = tree_cpu(os.getpid()) - cpu, time.monotonic() - wall
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv", "a", encoding="utf-8") as out:
        out.write(f"{item.nodeid}\t{cpu:.2f}\t{wall:.2f}\n")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller, or a run without xdist
        for old in OUT.glob("*.tsv"):
            old.unlink()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    cpu: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    for path in OUT.glob("*.tsv"):
        for line in path.read_text(encoding="utf-8").splitlines():
            nodeid, c, w = line.split("\t")
            cpu[nodeid.split("::")[0]] += float(c)
            wall[nodeid.split("::")[0]] += float(w)
    if not cpu:
        return
    terminalreporter.section("CPU per test file (process trees)")
    terminalreporter.write_line(f"{sum(cpu.values()):8.1f} CPU s in all; the files that took most:")
    for name in sorted(cpu, key=cpu.__getitem__, reverse=True)[:15]:
        terminalreporter.write_line(f"{cpu[name]:8.1f} CPU s {wall[name]:8.1f} s  {name}")
