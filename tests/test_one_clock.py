"""One clock: processes whose host clocks are minutes apart still agree, because every time they compare
is the database server's. The producer and the process that runs the job start with their host clocks
shifted ±5 minutes (`tests/skewed_clock.py`: an offset injected into `time.time` and `datetime.now`,
what the code would use if it trusted its host); the database server keeps the true time."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import redis

from eduranker.store import jobs
from tests.celery_worker import PATIENCE, ROOT, settings_env

SKEWED = "import tests.skewed_clock\n"
PRODUCER = SKEWED + "tests.skewed_clock.run_module('producer')"
# A run's heartbeat, exactly as a worker runs it (worker.run.Run), in a process of its own: it claims the
# job, says so with its host clock and the server's, and beats until killed.
BEATER = (
    SKEWED
    + """
import json, sys, time
from datetime import UTC, datetime
from eduranker.settings import Settings
from eduranker.store import connect, jobs
from eduranker.store.clock import server_now
from worker.run import Run
s = Settings.from_env()
db = connect(s)
job = jobs.claim_job(db, sys.argv[1], worker="skewed-worker", stale_after_s=s.job_stale_after_s)
print(json.dumps({"attempt": job["attempts"], "host": datetime.now(UTC).isoformat(),
                  "server": server_now(db).isoformat()}), flush=True)
with Run(db, sys.argv[1], job["attempts"], s.job_heartbeat_seconds, None):
    time.sleep(3600)
"""
)


def shifted_env(settings, offset_s):
    env = settings_env(settings)
    env["SKEWED_CLOCK_SECONDS"] = str(offset_s)
    return env


@pytest.fixture()
def csettings(settings, redis_url):
    queue_db = int(settings.mongodb_db[-6:], 16) % 10 + 4
    s = replace(
        settings,
        celery_broker_url=f"{redis_url}/{queue_db}",
        celery_result_backend=f"{redis_url}/{queue_db}",
        job_heartbeat_seconds=0.5,  # a redelivery may take over after 2 s of silence, the producer requeues after 4 s
        producer_lease_seconds=2,
        train_min_feedback=100_000,  # no automatic job: the test's own job is the only one
    )
    redis.Redis.from_url(s.celery_broker_url).flushdb()
    return s


class Children:
    def __init__(self, tmp_path):
        self.tmp_path, self.procs = tmp_path, []

    def start(self, argv, settings, offset, name, **kwargs):
        out = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, cwd=ROOT, env=shifted_env(settings, offset), stderr=out,
                                start_new_session=True, **kwargs)  # fmt: skip
        self.procs.append(proc)
        return proc

    def producer(self, settings, offset, name):
        return self.start([sys.executable, "-c", PRODUCER], settings, offset, name, stdout=subprocess.DEVNULL)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture()
def children(tmp_path):
    running = Children(tmp_path)
    yield running
    running.stop_all()


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached within the safety timeout")


def duty_runs(db, name):
    state = db.producer_state.find_one({"_id": "producer"}) or {}
    return ((state.get("duties") or {}).get(name) or {}).get("runs", 0)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("producer_offset", "worker_offset"), [(300, -300), (-300, 300)])
def test_clocks_five_minutes_apart_a_beating_job_is_never_requeued_and_a_silent_one_is(
    db, csettings, children, producer_offset, worker_offset
):
    assert jobs.create_job(db, "manual-skew", trigger={"reason": "skew", "source": "test"}, sent=True) == jobs.QUEUED
    beater = children.start([sys.executable, "-c", BEATER, "manual-skew"], csettings, worker_offset, "beater",
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    claimed = json.loads(beater.stdout.readline())
    # The clocks really are shifted: the worker's host clock is five minutes off the server's.
    from datetime import datetime

    skew = datetime.fromisoformat(claimed["host"]) - datetime.fromisoformat(claimed["server"])
    assert abs(skew.total_seconds()) > 290, skew
    children.producer(csettings, producer_offset, "producer")
    # An idle producer housekeeps at each idle evaluation (every 5 s): 5 passes span five times the 4 s
    # cutoff. With host clocks the producer would see a heartbeat ten minutes old at its first pass.
    wait_until(lambda: duty_runs(db, "requeue") >= 5)
    job = jobs.get_job(db, "manual-skew")
    assert (job["status"], job["attempts"]) == (jobs.RUNNING, 1), job
    assert job["heartbeat_at"] > job["started_at"]  # it is beating, stamped by the server

    os.killpg(beater.pid, signal.SIGKILL)  # the run dies: silent from now on
    requeued = wait_until(lambda: (j := jobs.get_job(db, "manual-skew"))["status"] != jobs.RUNNING and j)
    assert requeued["status"] == jobs.QUEUED and "silent" in requeued["reason"], requeued
    assert requeued["attempts"] == 1  # nobody else ran it meanwhile


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("leader_offset", "standby_offset"), [(300, -300), (-300, 300)])
def test_clocks_five_minutes_apart_one_leader_and_a_standby_takes_over_only_after_the_leader_died(
    db, csettings, children, leader_offset, standby_offset
):
    leader = children.producer(csettings, leader_offset, "leader")
    holder = wait_until(lambda: (db.producer_state.find_one({"_id": "producer-lease"}) or {}).get("holder"))
    assert holder.split("-")[-2] == str(leader.pid)
    children.producer(csettings, standby_offset, "standby")
    # While the leader lives the standby never takes the lease: watched over 4 of the leader's
    # housekeeping passes (about ten lease lengths). With host clocks, the standby five minutes ahead would take
    # it at once, or five minutes behind would wait ten minutes after the leader died.
    start = duty_runs(db, "requeue")
    while duty_runs(db, "requeue") < start + 4:
        assert db.producer_state.find_one({"_id": "producer-lease"})["holder"] == holder
        time.sleep(0.1)
    os.killpg(leader.pid, signal.SIGKILL)
    # The standby takes over once the dead leader's lease has expired on the server's clock. The
    # safety timeout (60 s × TEST_PATIENCE: 3 minutes) is far below the ten minutes a host-clock lease would
    # have taken.
    new = wait_until(lambda: (h := db.producer_state.find_one({"_id": "producer-lease"})["holder"]) != holder and h)
    assert new != holder
