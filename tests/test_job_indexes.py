"""Every periodic read of `training_jobs` is served by an index: the commands the producer's own functions
send are captured and explained against 100,000 job documents on the real server."""

from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from tests.explain import CapturedCommands, plan_stages

JOBS = 100_000


def _fill(db) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    statuses = ("succeeded", "rejected", "failed", "cancelled")
    for begin in range(0, JOBS, 10_000):
        db["training_jobs"].insert_many(
            [
                {"_id": f"job-{i:06d}", "status": statuses[i % 4], "automatic": i % 5 != 0,
                 "created_at": t0 + timedelta(minutes=i), "finished_at": t0 + timedelta(minutes=i, seconds=30),
                 "trigger": {"watermark": t0 + timedelta(minutes=i - i % 3)}}
                for i in range(begin, min(begin + 10_000, JOBS))
            ]
        )  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_each_periodic_job_query_uses_an_index_at_100000_jobs(settings):
    from eduranker.store import ensure_indexes, jobs
    from producer.history import read_history

    captured = CapturedCommands("training_jobs", ("find", "aggregate", "count"))
    client: MongoClient = MongoClient(settings.mongodb_url, tz_aware=True, event_listeners=[captured])
    db = client[settings.mongodb_db]
    try:
        # Filled first, then indexed (each index built in one pass, as on a deployment that upgrades):
        # the same indexes, for 55 s of the server's CPU instead of 88 s with every insert maintaining seven.
        _fill(db)
        ensure_indexes(db)
        now = datetime(2030, 1, 1, tzinfo=UTC)
        captured.commands.clear()
        read_history(db, retry_limit=3)  # every evaluation: active, newest, settled, automatic, failed chain
        jobs.next_waiting(db)
        jobs.unsent_jobs(db)
        jobs.resend_unclaimed(db, after_s=300, max_sends=3, at=now)
        jobs.requeue_silent(db, silent_after_s=120, at=now)
        jobs.unfinished_jobs(db)
        assert len(captured.commands) >= 8
        for command in captured.commands:
            stages = [stage.get("stage", "") for stage in plan_stages(db, command)]
            assert "IXSCAN" in stages and "COLLSCAN" not in stages, (command, stages)
    finally:
        client.drop_database(settings.mongodb_db)
        client.close()
