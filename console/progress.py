"""Showing jobs as they run, from their records: a progress bar per job on a terminal, plain lines
(one per stage and epoch, then the outcome) anywhere else. Used by the demo and `eduranker watch`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]

from eduranker.records import JobDoc
from eduranker.store import jobs
from eduranker.store.types import Db


class JobView:
    """Renders successive snapshots of one job's record."""

    def __init__(self, job_id: str, out: TextIO, bar: bool):
        self.job_id, self.out, self.bar = job_id, out, bar
        self._tqdm: tqdm | None = None
        self._last_line = ""
        self.ended = False

    def show(self, job: JobDoc) -> None:
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


class Follower:
    """Shows jobs from their records, each from the first time it is seen to its outcome, once."""

    def __init__(self, db: Db, out: TextIO | None = None):
        self.db, self.out = db, out or sys.stdout
        self.views: dict[str, JobView] = {}
        self.bar = self.out.isatty()

    def poll(self, *, job_ids: Sequence[str] = (), since: datetime | None = None) -> list[dict[str, Any]]:
        """Show the jobs named, and every job created at or after `since` (the server's clock); returns
        the jobs whose outcome this poll printed."""
        found = [jobs.get_job(self.db, j) for j in job_ids]
        if since is not None:
            found += [job for job in jobs.jobs_since(self.db, since) if job["_id"] not in job_ids]
        ended: list[dict[str, Any]] = []
        for job in filter(None, found):
            view = self.views.setdefault(job["_id"], JobView(job["_id"], self.out, self.bar))
            if not view.ended:
                view.show(job)
                if view.ended:
                    ended.append(job)
        return ended

    def all_ended(self, job_ids: Sequence[str]) -> bool:
        return all(j in self.views and self.views[j].ended for j in job_ids)


def follow_jobs(
    db: Db,
    *,
    job_ids: Sequence[str] = (),
    since: datetime | None = None,
    end_when: Callable[[dict[str, Any]], bool] | None = None,
    deadline: float | None = None,
    follower: Follower | None = None,
    out: TextIO | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any] | None:
    """Show the given jobs and every job created since `since` until the given ones have all ended;
    with `end_when`, until a job for which it holds has ended (returned); or until `deadline`
    (monotonic). Without `job_ids` or `end_when` it follows until the deadline (or for good)."""
    follower = follower or Follower(db, out)
    while deadline is None or time.monotonic() < deadline:
        for job in follower.poll(job_ids=job_ids, since=since):
            if end_when is not None and end_when(job):
                return job
        if job_ids and end_when is None and follower.all_ended(job_ids):
            return None
        time.sleep(poll_s)
    return None
