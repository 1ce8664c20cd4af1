"""How a run of the Celery task ends, decided from its job's record (a pure function and its exceptions).

The task id is the job id, so every run of one job (a redelivery, a hand-back resent by the outbox, a
manual job sent once its slot freed) reports into the same Celery result. A run therefore ends:
- with the job's outcome as its result when the job succeeded or the gate rejected its candidate;
- in FAILURE, with an exception whose message begins with the outcome in words (`CANCELLED: …`,
  `FAILED: …`), when the job was cancelled or failed: Flower shows that, and `r.get()` raises it;
- silently (Celery's `Ignore`: no result, no state) when the job is not over (waiting, handed back,
  taken over by another run): the run of the same id that ends it writes the result.
"""

from __future__ import annotations

from enum import StrEnum

from eduranker.records import JobDoc
from eduranker.store import jobs


class JobEnded(Exception):
    """A job that ended without a model of its own: its headline is the message."""


class JobCancelled(JobEnded):
    """The job was cancelled (an operator, a stopped local cluster)."""


class JobFailed(JobEnded):
    """The job failed; its reason is on the record."""


class TaskEnd(StrEnum):
    RESULT = "result"  # return the job's outcome: SUCCESS
    FAILURE = "failure"  # raise JobCancelled / JobFailed: FAILURE
    LATER = "later"  # another run of the same task id ends it: Ignore


_BY_STATUS: dict[str, TaskEnd] = {
    jobs.SUCCEEDED: TaskEnd.RESULT,
    jobs.REJECTED: TaskEnd.RESULT,
    jobs.CANCELLED: TaskEnd.FAILURE,
    jobs.FAILED: TaskEnd.FAILURE,
}


def task_end(job: JobDoc | None) -> TaskEnd:
    """What this run reports for `job` as it is now (None: the record is gone, nothing to report)."""
    if job is None:
        return TaskEnd.LATER
    return _BY_STATUS.get(str(job.get("status")), TaskEnd.LATER)


def failure_for(job: JobDoc) -> JobEnded:
    """The exception a cancelled or failed job's run raises, its message the job's headline."""
    headline = f"{jobs.headline(job)} (job {job.get('_id')})"
    return JobCancelled(headline) if job.get("status") == jobs.CANCELLED else JobFailed(headline)
