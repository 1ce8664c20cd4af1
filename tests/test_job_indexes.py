"""Every periodic read of `training_jobs` is served by an index: the commands the producer's own functions
send are captured and explained against 100,000 job documents on the real server."""

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from tests.conftest import mongo_server
from tests.explain import CapturedCommands, plan_stages

JOBS = 100_000


def _fill(db, start: int, stop: int) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    statuses = ("succeeded", "rejected", "failed", "cancelled")
    for begin in range(start, stop, 10_000):
        db["training_jobs"].insert_many(
            [
                {"_id": f"job-{i:06d}", "status": statuses[i % 4], "automatic": i % 5 != 0,
                 "created_at": t0 + timedelta(minutes=i), "finished_at": t0 + timedelta(minutes=i, seconds=30),
                 "trigger": {"watermark": t0 + timedelta(minutes=i - i % 3)}}
                for i in range(begin, min(begin + 10_000, stop))
            ]
        )  # fmt: skip


@pytest.fixture()
def own_server_url(tmp_path) -> Iterator[str]:
    """A server of its own, killed at the end: on SecantusDB that costs nothing, where dropping 100,000
    documents took 16 s of its CPU. A server from outside (MONGODB_URL) is used as it is, and cleaned."""
    with mongo_server(tmp_path / "secantus", signal.SIGKILL) as url:  # its data goes with tmp_path
        yield url


@pytest.mark.integration
@pytest.mark.slow
def test_each_periodic_job_query_uses_an_index_at_100000_jobs(settings, own_server_url):
    from eduranker.store import ensure_indexes, jobs
    from producer.history import read_history

    captured = CapturedCommands("training_jobs", ("find", "aggregate", "count"))
    client: MongoClient = MongoClient(own_server_url, tz_aware=True, event_listeners=[captured])
    db = client[settings.mongodb_db]
    try:
        # The commands are captured on the first 1,000 jobs (the same pattern of statuses, so the same
        # branches, such as the failed chain's count) and explained once all 100,000 are in and indexed.
        # Filled first, then indexed: each index built in one pass, as on a deployment that upgrades,
        # for less of the server's CPU than every insert maintaining seven.
        _fill(db, 0, 1_000)
        now = datetime(2030, 1, 1, tzinfo=UTC)
        read_history(db, retry_limit=3)  # every evaluation: active, newest, settled, automatic, failed chain
        jobs.next_waiting(db)
        jobs.unsent_jobs(db)
        jobs.resend_unclaimed(db, after_s=300, max_sends=3, at=now)
        jobs.requeue_silent(db, silent_after_s=120, at=now)
        jobs.unfinished_jobs(db)
        commands = list(captured.commands)
        assert len(commands) >= 8 and any("trigger.watermark" in str(c) for c in commands)
        _fill(db, 1_000, JOBS)
        ensure_indexes(db)
        assert db["training_jobs"].estimated_document_count() == JOBS
        for command in commands:
            stages = [stage.get("stage", "") for stage in plan_stages(db, command)]
            assert "IXSCAN" in stages and "COLLSCAN" not in stages, (command, stages)
    finally:
        if os.environ.get("MONGODB_URL"):
            client.drop_database(settings.mongodb_db)
        client.close()
