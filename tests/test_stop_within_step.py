# ruff: noqa: F811 - the fixture imported from tests/test_unattended.py is used as an argument
"""A cancelled or superseded run stops within a training step (or a second), not at its next stage, and
leaves no version folder or document; the run says how far it got and why."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from console import cli, demo
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.training import TrainConfig, TrainingStopped, fine_tune
from eduranker.store import ensure_indexes, jobs
from tests.celery_worker import PATIENCE, ROOT, settings_env, wait_for_job
from tests.test_unattended import RUN_JOB, RUN_JOB_FIELDS, usettings  # noqa: F401 - fixture
from worker.run import Run
from worker.stop_check import StopCheck, StoppedTraining, stop_reason

LONG = 400  # epochs: far more training than any test waits for, so a run that did not stop would fail


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        ({"status": "running", "attempts": 2}, None),
        ({"status": "cancelled", "attempts": 2, "reason": "operator (cli)"}, "cancelled (operator (cli))"),
        ({"status": "running", "attempts": 3}, "superseded: attempt 3 took the job over"),
        ({"status": "cancelled", "attempts": 3, "reason": "x"}, "cancelled (x)"),
        ({"status": "queued", "attempts": 2}, "the job is queued now"),  # handed back by someone else
        ({"status": "succeeded", "attempts": 2}, "the job is succeeded now"),
        (None, "its job record is gone"),
    ],
)
def test_why_a_run_must_stop_is_read_from_its_job(job, reason):
    assert stop_reason(job, 2) == reason


def test_fine_tuning_stops_before_the_first_step_it_is_refused(tiny_model_path):
    model, tokenizer = load_cross_encoder(tiny_model_path, torch.device("cpu"), seed=0)
    config = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-4, head_learning_rate=1e-2, max_length=16, seed=0,
                         freeze_embeddings=True, precision="auto")  # fmt: skip
    asked, steps = [], []

    def should_stop() -> bool:
        asked.append(len(steps))
        return len(asked) > 2  # the third ask: after two steps

    with pytest.raises(TrainingStopped) as stopped:
        fine_tune(model, tokenizer, ["q"] * 8, ["d"] * 8, [1.0, 0.0] * 4, config, device=torch.device("cpu"),
                  on_step=lambda *a: steps.append(a), should_stop=should_stop)  # fmt: skip
    assert (stopped.value.steps, stopped.value.total_steps) == (2, 6)
    assert asked == [0, 1, 2] and len(steps) == 2  # asked before every step; no step after the refusal


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.mark.integration
def test_the_check_reads_the_job_at_most_once_per_interval_and_at_once_after_a_pause(db, settings):
    ensure_indexes(db)
    jobs.create_job(db, "chk", trigger={"reason": "t", "source": "test"})
    attempt = jobs.claim_job(db, "chk", worker="w", stale_after_s=60)["attempts"]
    run, clock = Run(db, "chk", attempt, 60, None), Clock()
    check = StopCheck(db, run, interval_s=1.0, clock=clock)
    assert not check() and check.reads == 1
    for _ in range(50):  # fifty steps within one second: no more reads
        clock.t += 0.01
        assert not check()
    assert check.reads == 1
    assert jobs.cancel_job(db, "chk", "operator (test)")
    clock.t += 0.6  # one second after the last read: the next step's check reads and stops the run
    assert check() and check.reads == 2
    assert check.reason == "cancelled (operator (test))" and run.superseded.is_set()
    stopped = check.stopped(7, 90)
    assert isinstance(stopped, StoppedTraining) and str(stopped).endswith("step 7/90: cancelled (operator (test))")
    assert check() and check.reads == 2  # stopped for good, without reading again


def _no_version_left(db, models_dir):
    assert db.model_versions.count_documents({}) == 0
    versions = Path(models_dir) / "versions"
    assert not versions.exists() or not any(versions.iterdir())
    staging = Path(models_dir) / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def _training(db, job_id):
    """The job's progress once it has taken two training steps (it fails fast if the job ended instead)."""
    ended_or_training = lambda j: j["status"] in jobs.TERMINAL or (j.get("progress") or {}).get("step", 0) >= 2  # noqa: E731
    job = wait_for_job(db, job_id, ended_or_training, timeout=300)
    assert job["status"] == "running", job
    return job["progress"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_cancelled_by_the_cli_mid_training_stops_before_training_ends_and_leaves_nothing(db, usettings):
    from worker.job import run_training_job

    # Heartbeats 30 s apart: what stops the run is the per-step check, not a heartbeat.
    s = replace(usettings, num_epochs=LONG, job_heartbeat_seconds=30)
    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "cancel-me", trigger={"reason": "test"})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_training_job(s, "cancel-me", db=db)), daemon=True)
    runner.start()
    at_cancel = _training(db, "cancel-me")
    assert cli.main(["cancel", "cancel-me", "--reason", "operator (test)"], s) == 0
    runner.join(timeout=300)
    assert not runner.is_alive()

    stopped = result["stopped"]
    assert result["status"] == "superseded" and stopped["reason"] == "cancelled (operator (test))"
    assert stopped["total_steps"] == at_cancel["total_steps"]
    assert at_cancel["step"] <= stopped["step"] < stopped["total_steps"]  # stopped long before training ended
    job = jobs.get_job(db, "cancel-me")
    assert job["status"] == "cancelled" and job["reason"] == "operator (test)" and "active" not in job
    assert job["stopped_run"] == stopped  # the record says where and why the run stopped
    _no_version_left(db, s.models_dir)


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_paused_mid_training_and_superseded_stops_at_once_when_resumed_and_writes_nothing(db, usettings):
    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "taken", trigger={"reason": "test"})
    fields = {**{k: getattr(usettings, k) for k in RUN_JOB_FIELDS}, "num_epochs": LONG}
    paused = subprocess.Popen([sys.executable, "-c", RUN_JOB, json.dumps(fields), "taken"], cwd=ROOT,
                              env=settings_env(usettings), stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        at_pause = _training(db, "taken")
        os.kill(paused.pid, signal.SIGSTOP)
        # Another attempt takes the job over as soon as the paused run's heartbeat is stale (2 s).
        deadline = time.monotonic() + 120 * PATIENCE
        while (successor := jobs.claim_job(db, "taken", worker="successor", stale_after_s=2)) is None:
            assert time.monotonic() < deadline, jobs.get_job(db, "taken")
            time.sleep(0.2)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    try:
        out, _ = paused.communicate(timeout=300)
    finally:
        if paused.poll() is None:  # it did not stop: do not leave it training
            paused.kill()
    result = json.loads(out.strip().splitlines()[-1])
    stopped = result["stopped"]
    assert result["status"] == "superseded" and stopped["reason"] == "superseded: attempt 2 took the job over"
    assert at_pause["step"] <= stopped["step"] < stopped["total_steps"] == at_pause["total_steps"]
    assert jobs.get_job(db, "taken") == successor  # the resumed run wrote nothing to its successor's job
    _no_version_left(db, usettings.models_dir)
