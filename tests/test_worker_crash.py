"""A worker killed with SIGKILL mid-training: the job comes back, completes once, and leaves no debris."""

import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from console import demo
from eduranker.errors import PermanentError
from eduranker.store import jobs
from eduranker.store.jobs import MAX_ATTEMPTS
from producer.outbox import request_training
from tests.celery_worker import PATIENCE, start_worker, stop_worker, training, wait_for_job
from worker.job import run_training_job


@pytest.fixture()
def crash_settings(settings, redis_url):
    s = replace(
        settings,
        celery_broker_url=f"{redis_url}/12",
        celery_result_backend=f"{redis_url}/13",
        num_epochs=1,  # a job takes about 15 s on a quiet machine; it is killed while it trains
        # A short limit, so that redelivery (visibility timeout = 2 × the limit) fits in a test, yet one
        # that a loaded machine cannot run out of: 20 s × TEST_PATIENCE (60 s: redelivery after 120 s).
        # At a flat 40 s a redelivered run on a busy machine ended in SoftTimeLimitExceeded.
        task_time_limit=max(30, int(20 * PATIENCE)),
        job_heartbeat_seconds=1.0,
    )
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()
    yield s
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()


def version_folders(settings):
    root = Path(settings.models_dir) / "versions"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def pool_children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def job_in_training(db, settings, log_path, seed):
    """Feedback, a job sent through the outbox, and a worker that has started training it."""
    demo.seed_feedback(db, seed=seed)
    job_id = request_training(reason="crash drill", settings=settings)
    worker = start_worker(settings, log_path, name="w1")
    try:
        wait_for_job(db, job_id, training, timeout=180)
    except BaseException:
        stop_worker(worker)
        raise
    return job_id, worker


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_pool_process_is_redelivered_and_the_job_completes_once(db, crash_settings, tmp_path):
    """The OOM killer's case: the child dies, the worker survives and gets the message back at once."""
    job_id, worker = job_in_training(db, crash_settings, tmp_path / "worker.log", seed=3)
    try:
        children = pool_children(worker.pid)
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGKILL)
        job = wait_for_job(db, job_id, lambda j: j["status"] in jobs.TERMINAL, timeout=300)
    finally:
        stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    # Completed once, with its version registered (promoted or not is the gate's call on this data).
    assert job["status"] in (jobs.SUCCEEDED, jobs.REJECTED) and job.get("version"), (job.get("reason"), log[-3000:])
    assert job["attempts"] == 2
    assert "WorkerLostError" in log or "signal 9" in log
    assert version_folders(crash_settings) == [job["version"]]
    assert db.model_versions.count_documents({}) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_is_redelivered_to_the_next_worker_after_the_visibility_timeout(db, crash_settings, tmp_path):
    """The power-loss case: the whole worker dies; its unacked message goes to a worker started later."""
    job_id, first = job_in_training(db, crash_settings, tmp_path / "w1.log", seed=4)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    first_claim = jobs.get_job(db, job_id)
    assert first_claim["status"] == "running"
    second = start_worker(crash_settings, tmp_path / "w2.log", name="w2")
    try:
        job = wait_for_job(db, job_id, lambda j: j["status"] in jobs.TERMINAL, timeout=400)
    finally:
        stop_worker(second)
    assert job["status"] in (jobs.SUCCEEDED, jobs.REJECTED) and job.get("version"), (
        job.get("reason"),
        (tmp_path / "w2.log").read_text()[-3000:],
    )
    assert job["worker"].startswith("w2@") and job["attempts"] == 2
    # A live job is never handed to a second worker: not before the visibility timeout, counted from
    # the first delivery (a moment before the first claim).
    waited = (job["started_at"] - first_claim["started_at"]).total_seconds()
    assert waited >= crash_settings.redelivery_after_s - 5
    assert version_folders(crash_settings) == [job["version"]]
    assert not any((Path(crash_settings.models_dir) / "versions").glob(".*"))


@pytest.mark.integration
def test_a_job_whose_worker_dies_every_time_fails_with_its_reason(db, settings):
    jobs.create_job(db, "doomed", trigger={"reason": "test"})
    db.training_jobs.update_one({"_id": "doomed"}, {"$set": {"attempts": MAX_ATTEMPTS}})
    with pytest.raises(PermanentError):
        run_training_job(settings, "doomed", db=db)
    job = jobs.get_job(db, "doomed")
    assert job["status"] == "failed" and f"gave up after {MAX_ATTEMPTS} attempts" in job["reason"]
    assert db.model_versions.count_documents({}) == 0
