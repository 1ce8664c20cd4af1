"""Registration's side effects fenced by the run's attempt: a run that lost its job writes no version.

The job's fence (status running, this attempt) is proven by a fenced write just before each side effect
(the version document, the promotion); each such write also refreshes the heartbeat, so no other
attempt can take the job over for `job_stale_after_s` after it. A run found superseded at either point
withdraws what it made: its version folder (the version number was allocated to this run alone) and a
candidate document it inserted. What is left: a run that stalls for longer than the stale limit within
the few milliseconds between a fenced write and the write after it (docs/consistency.md).
"""

from __future__ import annotations

import logging
import shutil

from eduranker.errors import Superseded
from eduranker.models_dir import version_dir
from eduranker.settings import Settings
from eduranker.store import jobs, versions
from eduranker.store.connection import patiently
from eduranker.store.types import Db
from worker.run import WRITE_PATIENCE_S, Run

log = logging.getLogger(__name__)


def withdraw(db: Db, s: Settings, run: Run, version: str, *, inserted: bool) -> None:
    """Remove this superseded run's version folder (and its candidate document, if it inserted one)."""
    if inserted and versions.withdraw_candidate(db, version, run.job_id):
        log.warning("job %s: withdrew %s (this run was superseded before promoting)", run.job_id, version)
    shutil.rmtree(version_dir(s.models_dir, version), ignore_errors=True)


def prove_owner(db: Db, s: Settings, run: Run, version: str, stage: str, *, inserted: bool) -> None:
    """A fenced write before a side effect; Superseded (after withdrawing) when this run lost its job."""
    progress = {"job_id": run.job_id, "stage": stage, "version": version}
    try:
        if run.superseded.is_set():  # the heartbeat found the job taken over already
            raise Superseded(f"job {run.job_id} attempt {run.attempt} was taken over")
        # Not run.update: a worker shutting down now lets this run finish registering (a few writes)
        # rather than hand back a job whose version is half registered.
        patiently(lambda: jobs.update_job(db, run.job_id, run.attempt, progress=progress),
                  patience_s=WRITE_PATIENCE_S, what=f"proving ownership before {stage}")  # fmt: skip
    except Superseded:
        withdraw(db, s, run, version, inserted=inserted)
        raise
