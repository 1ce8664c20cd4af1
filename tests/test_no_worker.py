"""A queue with no worker: the job is not failed as "message lost"; it waits, says "no worker", and
runs once a worker starts. Real SecantusDB, redis-server, producer and Celery worker."""

from dataclasses import replace

import pytest
import redis

from eduranker.store import jobs
from producer.outbox import request_training
from tests.celery_worker import start_worker, stop_worker, wait_for_job
from tests.test_producer import ThreadedProducer


@pytest.mark.integration
@pytest.mark.slow
def test_a_job_with_no_worker_running_waits_saying_so_and_runs_when_one_starts(db, settings, redis_url, tmp_path):
    queue_db = int(settings.mongodb_db[-6:], 16) % 10 + 4
    s = replace(
        settings,
        celery_broker_url=f"{redis_url}/{queue_db}",
        celery_result_backend=f"{redis_url}/{queue_db}",
        job_resend_after_seconds=1,  # with one send allowed, the old rule failed the job after 1 s
        job_max_resends=0,
        job_heartbeat_seconds=0.5,
        producer_lease_seconds=2,
        train_min_feedback=100_000,
    )
    redis.Redis.from_url(s.celery_broker_url).flushdb()
    with ThreadedProducer(s) as producer:
        job_id = request_training("no worker yet", settings=s)
        waiting = wait_for_job(db, job_id, lambda j: j.get("reason") == jobs.NO_WORKER, timeout=60)
        assert waiting["status"] == jobs.QUEUED and waiting.get("no_worker_since") is not None
        # It keeps waiting across several of the producer's passes, still queued, still saying why.
        runs = producer.duties.get("resend").runs
        wait_for_job(db, job_id, lambda j: producer.duties.get("resend").runs >= runs + 3, timeout=60)
        still = jobs.get_job(db, job_id)
        assert (still["status"], still["reason"], still["sends"]) == (jobs.QUEUED, jobs.NO_WORKER, 1)
        worker = start_worker(s, tmp_path / "worker.log", name="late")
        try:
            claimed = wait_for_job(db, job_id, lambda j: j.get("attempts", 0) >= 1, timeout=120)
            assert claimed["status"] in (jobs.RUNNING, *jobs.TERMINAL) and claimed["status"] != jobs.FAILED
        finally:
            stop_worker(worker)
