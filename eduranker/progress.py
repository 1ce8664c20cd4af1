"""Showing jobs as they run, from their records: a progress bar per job on a terminal, plain lines
(one per stage and epoch, then the outcome) anywhere else. Used by the demo and `eduranker watch`."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any, TextIO

from tqdm import tqdm

from eduranker.store import jobs
from eduranker.store.types import Db


class JobView:
    """Renders successive snapshots of one job's record."""

    def __init__(self, job_id: str, out: TextIO, bar: bool):
        self.job_id, self.out, self.bar = job_id, out, bar
        self._tqdm: tqdm | None = None
        self._last_line = ""
        self.ended = False

    def show(self, job: dict[str, Any]) -> None:
        if self.ended:
            return
        if job["status"] in jobs.TERMINAL:
            self._close()
            self._line(f"job {self.job_id}: {jobs.headline(job)}")
            self.ended = True
            return
        progress = job.get("progress") or {}
        stage = progress.get("stage") if job["status"] == jobs.RUNNING else job["status"]
        if self.bar and stage == "train" and progress.get("total_steps"):
            self._train_bar(progress)
            return
        if self._tqdm is not None:  # training is over: its last steps may have passed between two polls
            self._tqdm.update(self._tqdm.total - self._tqdm.n)
        self._close()
        detail = f" epoch {progress.get('epoch')}" if stage == "train" else ""
        self._line(f"job {self.job_id}: {stage or 'starting'}{detail}")

    def _train_bar(self, progress: dict[str, Any]) -> None:
        if self._tqdm is None:
            self._tqdm = tqdm(total=progress["total_steps"], desc=f"job {self.job_id}", file=self.out,
                              unit="step", dynamic_ncols=True, leave=True)  # fmt: skip
        self._tqdm.set_postfix_str(f"epoch {progress.get('epoch')}, loss {progress.get('loss')}", refresh=False)
        self._tqdm.update(max(0, int(progress.get("step") or 0) - self._tqdm.n))

    def _line(self, text: str) -> None:
        if text != self._last_line:  # plain output: one line per stage and per epoch, not per step
            print(f"  {text}", file=self.out, flush=True)
            self._last_line = text

    def _close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


def follow_jobs(
    db: Db,
    *,
    job_ids: list[str] | None = None,
    since: datetime | None = None,
    until_first_end: bool = False,
    deadline: float | None = None,
    out: TextIO | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any] | None:
    """Show the given jobs (or every job created since `since`) until they have all ended (with
    `until_first_end`, until one has; returns it), or until `deadline` (monotonic)."""
    out = out or sys.stdout
    views: dict[str, JobView] = {}
    bar = out.isatty()
    while deadline is None or time.monotonic() < deadline:
        found = [jobs.get_job(db, j) for j in job_ids] if job_ids else jobs.jobs_since(db, since or jobs.now())
        for job in filter(None, found):
            view = views.setdefault(job["_id"], JobView(job["_id"], out, bar))
            view.show(job)
            if until_first_end and view.ended:
                return job
        if job_ids and views and all(views.get(j) and views[j].ended for j in job_ids):
            return None
        time.sleep(poll_s)
    return None
