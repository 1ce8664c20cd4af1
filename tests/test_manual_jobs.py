"""Manual jobs on real processes (SecantusDB, redis-server, a Celery worker and the producer): `delay()`
beside an active job records a waiting job at once and `r.get()` returns its real outcome; the waiting
manual job runs before any automatic one; a cancelled job's Celery state is a failure that says so,
also for a job the outbox sent."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import redis
from celery import Celery

import celeryconfig
from console import demo
from eduranker.store import ensure_indexes, jobs
from producer.outbox import request_training
from tests.celery_worker import ROOT, settings_env, start_worker, stop_worker, training, wait_for_job

DELAY_BESIDE_A_JOB = """
import json
from worker.tasks import train_reranker
r = train_reranker.delay(reason="beside a job", num_epochs=1)
print(json.dumps({"id": r.id, "state": r.state}), flush=True)
print(json.dumps(r.get(timeout=900)), flush=True)
"""


@pytest.fixture()
def msettings(settings, redis_url):
    s = replace(
        settings,
        celery_broker_url=f"{redis_url}/2",
        celery_result_backend=f"{redis_url}/3",
        num_epochs=1,
        train_min_feedback=100,  # the demo feedback below is enough for an automatic job at once
        train_cooldown_seconds=0,
        producer_lease_seconds=2,
    )
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()
    return s


def _producer(settings, log_path):
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=settings_env(settings), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_a_manual_job_beside_an_active_one_waits_goes_first_and_its_result_is_its_outcome(db, msettings, tmp_path):
    demo.seed_feedback(db, seed=2)
    ensure_indexes(db)
    # Another job holds the slot (claimed by a worker that is not there), so the one asked for must wait.
    jobs.create_job(db, "ghost", trigger={"reason": "holds the slot"})
    jobs.claim_job(db, "ghost", worker="ghost@nowhere", stale_after_s=600)
    worker = start_worker(msettings, tmp_path / "worker.log")
    producer = _producer(msettings, tmp_path / "producer.log")
    shell = subprocess.Popen([sys.executable, "-c", DELAY_BESIDE_A_JOB], cwd=ROOT, env=settings_env(msettings),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    logs = lambda: "".join(p.read_text()[-3000:] for p in (tmp_path / "worker.log", tmp_path / "producer.log"))  # noqa: E731
    try:
        sent = json.loads(shell.stdout.readline())
        # delay() has returned: its job is recorded under the task's id, waiting, and so is its Celery state.
        job = jobs.get_job(db, sent["id"])
        assert job is not None and job["status"] == "waiting", (job, shell.stderr.read() if shell.poll() else "")
        assert job["trigger"] == {"reason": "beside a job", "source": "task"} and sent["state"] == "WAITING"
        # The producer starts nothing beside the ghost (an automatic job may only wait behind the manual one).
        assert jobs.count_jobs(db, {"automatic": True, "status": {"$ne": "waiting"}}) == 0
        # The slot frees while an automatic job is due (feedback over the threshold, no cooldown).
        jobs.cancel_job(db, "ghost", "the slot frees")
        result = json.loads(shell.stdout.readline() or "null")
        assert result is not None, shell.stderr.read()[-3000:] + logs()
        assert result["job_id"] == sent["id"] and result["status"] in ("succeeded", "rejected")
        assert result["outcome"].startswith(("PROMOTED v0001", "REJECTED v0001")), result
        manual = jobs.get_job(db, sent["id"])
        # Manual before automatic: no automatic job took the slot before the manual one had started.
        autos = list(db.training_jobs.find({"automatic": True}))
        assert all(a.get("slot_at") is None or a["slot_at"] > manual["started_at"] for a in autos), (manual, autos)

        # A job sent by the outbox (request_training), cancelled while it trains: its task fails, saying so.
        job_id = request_training("to be cancelled", settings=msettings)
        wait_for_job(db, job_id, training, 900)
        assert jobs.cancel_job(db, job_id, "operator")
        app = Celery("test-reader")
        app.conf.update(celeryconfig.from_settings(msettings))
        ended = app.AsyncResult(job_id)
        ended.get(timeout=600, propagate=False)
        assert ended.state == "FAILURE" and str(ended.result).startswith("CANCELLED: operator"), ended.result
        assert f"job {job_id} cancelled (operator)" in (tmp_path / "worker.log").read_text()
    finally:
        if shell.poll() is None:
            shell.kill()
        stop_worker(producer)
        stop_worker(worker)


@pytest.mark.integration
def test_an_automatic_job_waits_behind_the_manual_one_that_waits_for_the_freed_slot(db):
    ensure_indexes(db)
    assert jobs.create_job(db, "manual-a", trigger={}) == "queued"
    assert jobs.create_job(db, "manual-b", trigger={}) == "waiting"
    jobs.cancel_job(db, "manual-a", "done with it")  # the slot is free; manual-b has not moved in yet
    assert jobs.create_job(db, "auto-x", trigger={}, automatic=True) == "waiting"  # never in front of manual-b
    assert jobs.create_job(db, "auto-y", trigger={}, automatic=True) is None  # one automatic job waits at most
    assert jobs.create_job(db, "manual-c", trigger={}) == "waiting"
    assert jobs.advance_waiting(db) == "manual-b"
    assert jobs.get_job(db, "auto-x")["status"] == "waiting" and jobs.get_job(db, "manual-b")["status"] == "queued"
    jobs.cancel_job(db, "manual-b", "done with it")
    assert jobs.advance_waiting(db) == "auto-x"  # its turn came before manual-c's: first come, first served
