# ruff: noqa: F811 - the fixtures imported from tests/test_unattended.py are used as arguments
"""Running for months with nobody watching, continued (tests/test_unattended.py has the first part): a
database stopped for a minute mid-training, a run stalled with SIGSTOP that wakes after its successor
finished, a leading producer killed with -9. Each test breaks a real process."""

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from console import demo
from console.localservers import mongo_url, secantus_server
from eduranker.store import connect, jobs
from producer.outbox import request_training
from tests.celery_worker import PATIENCE, training, wait_for_job
from tests.test_unattended import ended, processes, superseded_while_stopped, usettings  # noqa: F401 - fixtures


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
def test_a_stalled_run_that_wakes_after_its_successor_finished_writes_nothing(db, usettings, tmp_path):
    """A run paused (SIGSTOP: alive but silent) loses its job to another attempt; resumed, it must stop
    without a heartbeat, progress, outcome or registration of its own."""
    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "stall", trigger={"reason": "test"})
    successor, after_successor, resumed = superseded_while_stopped(db, usettings, "stall", training)
    assert resumed["status"] == "superseded"
    assert successor["status"] in ("succeeded", "rejected")
    job = jobs.get_job(db, "stall")
    assert job == after_successor  # not one field written by the woken run
    assert [v["version"] for v in db.model_versions.find()] == [job["version"]]
    assert sorted(p.name for p in (Path(usettings.models_dir) / "versions").iterdir()) == [job["version"]]


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
    holder = wait_for_lease_holder(db)
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
