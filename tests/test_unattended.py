"""Running for months with nobody watching: every job ends, nothing runs twice, nothing stalls.

Each test breaks a real process: here a flushed broker, a worker stopped mid-job (SIGTERM) and a first
job that fails; tests/test_unattended_outages.py has a stopped database, a stalled run (SIGSTOP) and a
killed leader (kill -9). The two files run side by side in the suite's test processes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import redis

from console import demo
from eduranker.store import jobs, versions
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
        num_epochs=1,  # as the settings fixture: these tests break processes, not the model's quality
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


def never_silent(s):
    """For a test where no run falls silent: a heartbeat a loaded machine cannot miss (stale after 40 s).
    With 0.5 s, a run starved of CPU for 2 s was taken over by a second attempt, and the test counting
    attempts failed on a busy machine though nothing it checks had gone wrong."""
    return replace(s, job_heartbeat_seconds=10.0)


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
    usettings = never_silent(usettings)
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
    usettings = never_silent(usettings)
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
RUN_JOB_FIELDS = ("mongodb_url", "mongodb_db", "models_dir", "base_model_name", "max_length", "num_epochs",
                  "job_heartbeat_seconds", "split_key", "torch_threads")  # fmt: skip


def superseded_while_stopped(db, usettings, job_id: str, stop_when) -> tuple[dict, dict, dict]:
    """A run of `job_id` in a process of its own, stopped (SIGSTOP: alive but silent) once `stop_when(job)`;
    past the stale limit another attempt runs the job here to its end; then the stopped run is resumed.
    Returns the successor's outcome, the job as the successor left it, and the resumed run's own result."""
    from worker.job import run_training_job

    fields = {k: getattr(usettings, k) for k in RUN_JOB_FIELDS}
    stopped = subprocess.Popen([sys.executable, "-c", RUN_JOB, json.dumps(fields), job_id], cwd=ROOT,
                               env=settings_env(usettings), stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_job(db, job_id, stop_when, timeout=300)
        os.kill(stopped.pid, signal.SIGSTOP)
        time.sleep(usettings.job_stale_after_s + 1)  # past the stale limit: another attempt may take over
        successor = run_training_job(usettings, job_id, worker_name="successor", db=db)
        after_successor = jobs.get_job(db, job_id)
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    out, _ = stopped.communicate(timeout=300)
    return successor, after_successor, json.loads(out.strip().splitlines()[-1])


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
    deadline = time.monotonic() + 120 * PATIENCE
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
