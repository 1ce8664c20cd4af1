"""One bad document never stops a duty's whole pass: job documents edited by hand among the ones the
requeue and resend passes act on (retention's version documents: tests/test_retention.py)."""

from datetime import timedelta

import pytest

from eduranker.store import ensure_indexes, jobs
from eduranker.store.clock import server_now


@pytest.mark.integration
def test_the_requeue_and_resend_passes_skip_a_mistyped_job_and_act_on_the_others(db):
    ensure_indexes(db)
    long_ago = server_now(db) - timedelta(hours=1)
    db["training_jobs"].insert_many([
        # Silent runs: one without its fence, one with a text for a count, then a good one.
        {"_id": "no-attempts", "status": "running", "heartbeat_at": long_ago, "created_at": long_ago},
        {"_id": "text-attempts", "status": "running", "heartbeat_at": long_ago, "attempts": "two",
         "created_at": long_ago},
        {"_id": "silent", "status": "running", "heartbeat_at": long_ago, "attempts": 1, "created_at": long_ago},
    ])  # fmt: skip
    assert jobs.requeue_silent(db, silent_after_s=60) == ["silent"]
    assert jobs.get_job(db, "silent")["status"] == "queued"
    db["training_jobs"].delete_one({"_id": "silent"})
    db["training_jobs"].insert_many([
        {"_id": "text-sends", "status": "queued", "sent_at": long_ago, "sends": "many", "created_at": long_ago},
        {"_id": "lost", "status": "queued", "sent_at": long_ago, "sends": 1, "created_at": long_ago},
    ])  # fmt: skip
    assert jobs.resend_unclaimed(db, after_s=60, max_sends=3) == ["lost"]
    assert jobs.get_job(db, "lost")["sent_at"] is None
