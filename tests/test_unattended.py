"""Running for months with nobody watching: every job ends, nothing runs twice, nothing stalls.

Each test breaks a real process (kill -9, SIGSTOP, SIGTERM, a flushed broker, a stopped database).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from eduranker import demo
from eduranker.localservers import mongo_url, secantus_server
from eduranker.store import connect, jobs, versions
from producer.outbox import request_training
from tests.celery_worker import PATIENCE, ROOT, settings_env, start_worker, stop_worker, training, wait_for_job


def ended(job):
    return job["status"] in jobs.TERMINAL


@pytest.fixture()
def usettings(settings, redis_url):
    queue_db = int(settings.mongodb_db[-6:], 16) % 10 + 4
    s = replace(
        settings,
        celery_broker_url=f"{redis_url}/{queue_db}",
        celery_result_backend=f"{redis_url}/{queue_db}",
        num_epochs=2,
        job_heartbeat_seconds=0.5,  # stale after 2 s, requeued by the producer after 4 s
        job_resend_after_seconds=3,
        worker_soft_shutdown_seconds=1,
        producer_lease_seconds=2,
        train_cooldown_seconds=2,
        train_min_feedback=100,
        train_new_feedback=100,
    )
    broker = redis.Redis.from_url(s.celery_broker_url)
    broker.flushdb()
    yield s
    broker.flushdb()


class Processes:
    """Workers and producers started for a test, all stopped (and their logs kept) at its end."""

    def __init__(self, tmp_path):
        self.tmp_path, self.procs, self.logs = tmp_path, [], []

    def worker(self, settings, name):
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        self.procs.append(start_worker(settings, log, name=name))
        return self.procs[-1]

    def producer(self, settings, name="producer"):
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        out = open(log, "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=settings_env(settings),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def tail(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in self.logs if p.exists())

    def stop_all(self):
        for proc in self.procs:
            stop_worker(proc)


@pytest.fixture()
def processes(tmp_path):
    running = Processes(tmp_path)
    yield running
    running.stop_all()


@pytest.mark.integration
@pytest.mark.slow
def test_a_job_whose_message_was_flushed_from_the_broker_is_resent_and_completes(db, usettings, processes):
    demo.seed_feedback(db, seed=3)
    job_id = request_training(reason="flush drill", settings=usettings)
    broker = redis.Redis.from_url(usettings.celery_broker_url)
    assert broker.llen("training") == 1
    broker.flushdb()  # FLUSHALL, or redis restarted without its append-only tail
    processes.producer(usettings)
    processes.worker(usettings, "w1")
    job = wait_for_job(db, job_id, ended, timeout=300)
    assert job["status"] in ("succeeded", "rejected"), processes.tail()
    print(f"\nflushed → resent at {job['resent_at'] - job['created_at']} after creation; {job['status']}")
    assert job["sends"] >= 2 and job["attempts"] == 1
    assert db.model_versions.count_documents({}) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_asked_to_stop_mid_job_hands_it_back_and_another_worker_starts_it(db, usettings, processes):
    demo.seed_feedback(db, seed=4)
    processes.producer(usettings)
    first = processes.worker(usettings, "w1")
    job_id = request_training(reason="deploy drill", settings=usettings)
    wait_for_job(db, job_id, training, timeout=180)
    second = processes.worker(usettings, "w2")
    stopped_at = time.monotonic()
    os.kill(first.pid, signal.SIGTERM)  # what `docker compose stop worker` sends
    job = wait_for_job(db, job_id, lambda j: j["status"] == "running" and j["worker"].startswith("w2@"), timeout=60)
    restarted_after = time.monotonic() - stopped_at
    assert first.wait(30) is not None  # the stopped worker exited within the grace period
    job = wait_for_job(db, job_id, ended, timeout=300)
    print(f"\nSIGTERM → running on w2 after {restarted_after:.1f} s")
    assert restarted_after < 60, processes.tail()
    assert job["status"] in ("succeeded", "rejected") and job["worker"].startswith("w2@"), processes.tail()
    assert job["attempts"] == 2 and job.get("handed_back") == 1
    assert "handed back" in (processes.tmp_path / "w1.log").read_text()
    assert db.model_versions.count_documents({}) == 1
    assert second.poll() is None


RUN_JOB = """
import json, sys
from eduranker.settings import Settings
from worker.job import run_training_job
s = Settings(**json.loads(sys.argv[1]))
print(json.dumps(run_training_job(s, sys.argv[2], worker_name="stalled"), default=str))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_stalled_run_that_wakes_after_its_successor_finished_writes_nothing(db, usettings, tmp_path):
    """A run paused (SIGSTOP: alive but silent) loses its job to another attempt; resumed, it must stop
    without a heartbeat, progress, outcome or registration of its own."""
    from worker.job import run_training_job

    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "stall", trigger={"reason": "test"})
    fields = {k: getattr(usettings, k) for k in ("mongodb_url", "mongodb_db", "models_dir", "base_model_name",
                                                  "max_length", "num_epochs", "job_heartbeat_seconds",
                                                  "split_key", "torch_threads")}  # fmt: skip
    import json

    stalled = subprocess.Popen([sys.executable, "-c", RUN_JOB, json.dumps(fields), "stall"], cwd=ROOT,
                               env=settings_env(usettings), stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_job(db, "stall", training, timeout=180)
        os.kill(stalled.pid, signal.SIGSTOP)
        time.sleep(usettings.job_stale_after_s + 1)
        successor = run_training_job(usettings, "stall", worker_name="successor", db=db)
        after_successor = jobs.get_job(db, "stall")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    out, _ = stalled.communicate(timeout=300)
    assert json.loads(out.strip().splitlines()[-1])["status"] == "superseded"
    assert successor["status"] in ("succeeded", "rejected")
    job = jobs.get_job(db, "stall")
    assert job == after_successor  # not one field written by the woken run
    assert [v["version"] for v in db.model_versions.find()] == [job["version"]]
    assert sorted(p.name for p in (Path(usettings.models_dir) / "versions").iterdir()) == [job["version"]]


@pytest.mark.integration
@pytest.mark.slow
def test_mongodb_stopped_for_60_s_mid_training_the_job_still_ends(usettings, tmp_path, processes):
    server = secantus_server(tmp_path / "db").start()
    s = replace(usettings, mongodb_url=mongo_url(server.port))
    db = connect(s)
    try:
        demo.seed_feedback(db, seed=6)
        processes.worker(s, "w1")
        job_id = request_training(reason="outage drill", settings=s)
        wait_for_job(db, job_id, training, timeout=180)
        server.stop()
        time.sleep(60)
        server.start()
        processes.producer(s)
        job = wait_for_job(db, job_id, ended, timeout=300)
        print(
            f"\nMongoDB down 60 s mid-training → {job['status']} ({job.get('reason')}), "
            f"{job['finished_at'] - job['started_at']} after the claim, attempts {job['attempts']}"
        )
        assert job["status"] in ("succeeded", "rejected", "failed"), processes.tail()
        assert job.get("reason") or job["status"] != "failed"
        assert db.training_jobs.count_documents({"status": {"$in": ["queued", "running"]}}) == 0
    finally:
        processes.stop_all()  # before their database goes away, or they wait on it to stop
        db.client.close()
        server.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_a_failed_first_automatic_job_is_retried_after_the_cooldown_and_a_model_appears(db, usettings, processes,
                                                                                        tmp_path):  # fmt: skip
    model = tmp_path / "base-model"
    shutil.copytree(usettings.base_model_name, model)
    s = replace(usettings, base_model_name=str(model), train_cooldown_seconds=3)
    hidden = tmp_path / "base-model-unmounted"
    model.rename(hidden)  # the model volume is not mounted yet: the first job fails
    demo.seed_feedback(db, seed=1)
    processes.producer(s)
    processes.worker(s, "w1")
    deadline = time.monotonic() + 120
    while not db.training_jobs.find_one({"status": "failed"}) and time.monotonic() < deadline:
        time.sleep(0.2)
    failed = db.training_jobs.find_one({"status": "failed"})
    assert failed is not None and failed["automatic"], processes.tail()
    hidden.rename(model)  # mounted again
    retry_id = failed["_id"] + "-retry1"
    retried = wait_for_job(db, retry_id, ended, timeout=300)
    assert retried["status"] == "succeeded", processes.tail()
    assert retried["trigger"]["watermark"] == failed["trigger"]["watermark"]
    assert (retried["created_at"] - failed["finished_at"]).total_seconds() >= s.train_cooldown_seconds - 0.5
    assert versions.read_champion(db).version == retried["version"]


def wait_for_lease_holder(db, timeout=30):
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        lease = db.producer_state.find_one({"_id": "producer-lease"}) or {}
        if lease.get("holder"):
            return lease["holder"]
        time.sleep(0.1)
    raise AssertionError("no producer took the lease")


@pytest.mark.integration
@pytest.mark.slow
def test_when_the_leading_producer_is_killed_a_standby_enqueues_the_next_crossing(db, usettings, processes):
    rng = demo.random.Random(8)
    corpus = demo.insert_corpus(db, rng)
    served = list(demo.feedback_updates(demo.serve_results(db, corpus, rng), rng, noise=0.1))
    a, b = processes.producer(usettings, "p1"), processes.producer(usettings, "p2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (db.producer_state.find_one({"_id": "producer-lease"}) or {}).get(
        "holder"
    ):
        time.sleep(0.1)
    holder = db.producer_state.find_one({"_id": "producer-lease"})["holder"]
    leader, standby = (a, b) if f"-{a.pid}-" in holder else (b, a)
    os.kill(leader.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for inference_id, value in served[:120]:
        demo.give_feedback(db, inference_id, value)
    wait = 0.0
    while db.training_jobs.count_documents({}) == 0 and wait < 30:
        time.sleep(0.1)
        wait = time.monotonic() - killed_at
    assert db.training_jobs.count_documents({}) == 1, processes.tail()
    print(f"\nleader killed → standby enqueued after {wait:.1f} s (lease {usettings.producer_lease_seconds} s)")
    assert wait < usettings.producer_lease_seconds + 10
    assert standby.poll() is None
    new_holder = db.producer_state.find_one({"_id": "producer-lease"})["holder"]
    assert f"-{standby.pid}-" in new_holder
