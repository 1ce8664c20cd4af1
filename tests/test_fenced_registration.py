# ruff: noqa: F811 - the fixture imported from tests/test_unattended.py is used as an argument
"""Registration is fenced by the run's attempt: a run paused just before registering, superseded
meanwhile, then resumed registers nothing, promotes nothing and leaves no version folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eduranker import demo
from eduranker.store import jobs
from tests.celery_worker import ROOT, settings_env, wait_for_job
from tests.test_unattended import RUN_JOB, usettings  # noqa: F401 - fixture


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_paused_before_registration_and_superseded_registers_nothing_and_leaves_no_folder(
    db, usettings, tmp_path
):
    from worker.job import run_training_job

    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "pause", trigger={"reason": "test"})
    names = ("mongodb_url", "mongodb_db", "models_dir", "base_model_name", "max_length", "num_epochs",
             "job_heartbeat_seconds", "split_key", "torch_threads")  # fmt: skip
    fields = {k: getattr(usettings, k) for k in names}
    paused = subprocess.Popen([sys.executable, "-c", RUN_JOB, json.dumps(fields), "pause"], cwd=ROOT,
                              env=settings_env(usettings), stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Paused while it writes its version aside: the next thing it does is register.
        wait_for_job(db, "pause", lambda j: (j.get("progress") or {}).get("stage") == "write_artifacts", timeout=300)
        os.kill(paused.pid, signal.SIGSTOP)
        time.sleep(usettings.job_stale_after_s + 1)  # past the stale limit: another attempt may take over
        successor = run_training_job(usettings, "pause", worker_name="successor", db=db)
        after_successor = jobs.get_job(db, "pause")
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    out, _ = paused.communicate(timeout=300)
    assert json.loads(out.strip().splitlines()[-1])["status"] == "superseded"
    assert successor["status"] in ("succeeded", "rejected")
    job = jobs.get_job(db, "pause")
    assert job == after_successor  # the resumed run wrote nothing to the job
    assert [v["version"] for v in db.model_versions.find()] == [job["version"]]  # and registered nothing
    assert sorted(p.name for p in (Path(usettings.models_dir) / "versions").iterdir()) == [job["version"]]
    champion = db.champion.find_one({"_id": "current"}) or {}
    assert champion.get("version") in (None, job["version"])  # and promoted nothing
