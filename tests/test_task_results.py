"""How a run of the Celery task ends, from its job's record (a table), and the one-line unreachable error."""

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from eduranker.unreachable import unreachable_line
from worker.results import JobCancelled, JobFailed, TaskEnd, failure_for, task_end


@pytest.mark.parametrize(
    "job,end",
    [
        ({"status": "succeeded", "promoted": True}, TaskEnd.RESULT),
        ({"status": "rejected"}, TaskEnd.RESULT),
        ({"status": "cancelled"}, TaskEnd.FAILURE),
        ({"status": "failed"}, TaskEnd.FAILURE),
        # Not over: another run of the same task id (the outbox's send, a redelivery) ends it and reports.
        ({"status": "waiting"}, TaskEnd.LATER),
        ({"status": "queued"}, TaskEnd.LATER),  # handed back
        ({"status": "running"}, TaskEnd.LATER),  # taken over
        (None, TaskEnd.LATER),
    ],
)
def test_how_a_run_ends_follows_the_job_record(job, end):
    assert task_end(job) is end


def test_a_cancelled_or_failed_job_fails_its_task_with_the_outcome_first():
    cancelled = failure_for({"_id": "j1", "status": "cancelled", "reason": "the local cluster was stopped"})
    assert isinstance(cancelled, JobCancelled)
    assert str(cancelled) == "CANCELLED: the local cluster was stopped (job j1)"
    failed = failure_for({"_id": "j2", "status": "failed", "reason": "too few pairs"})
    assert isinstance(failed, JobFailed) and not isinstance(failed, JobCancelled)
    assert str(failed).startswith("FAILED: too few pairs")


def test_an_unreachable_server_is_one_line_without_the_topology_dump():
    exc = ServerSelectionTimeoutError(
        "127.0.0.1:1: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms), "
        "Timeout: 5.0s, Topology Description: <TopologyDescription id: 1, servers: [...]>"
    )
    line = unreachable_line("mongodb://user:secret@127.0.0.1:1/", exc)
    assert "\n" not in line and "Topology" not in line and "secret" not in line
    assert line.startswith("error: cannot reach MongoDB at ") and line.endswith("Connection refused")
