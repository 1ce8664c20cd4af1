"""A real Celery worker process for tests: `celery -A worker worker -Q training -c 1` (or other queues)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from console.cluster import ROOT
from console.cluster import child_env as settings_env
from eduranker.settings import Settings
from eduranker.store import jobs

# How much longer than a quiet machine a wait may take before it counts as hung (TEST_PATIENCE).
PATIENCE = float(os.environ.get("TEST_PATIENCE", "3"))

__all__ = ["PATIENCE", "ROOT", "settings_env", "start_worker", "stop_worker", "training", "wait_for_job"]


def start_worker(
    settings: Settings,
    log_path: Path,
    name: str = "test",
    queues: str = "training",
    *,
    main: str = "celery",
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`queues` as `-Q` takes them (`training.a,training.b`); `main` the module run as `celery` (one that
    wraps it, such as tests.gated_worker); `env` added to the settings' environment."""
    argv = [sys.executable, "-m", main, "-A", "worker", "worker", "-Q", queues, "-c", "1"]
    argv += ["--loglevel", "INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        argv, cwd=ROOT, env={**settings_env(settings), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop_worker(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_job(db, job_id: str, predicate, timeout: float) -> dict:
    """The job once `predicate(job)` holds; AssertionError with its last state after `timeout` × PATIENCE.
    A safety net only: waiting longer costs nothing when the job gets there, so a loaded machine never fails it."""
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        job = jobs.get_job(db, job_id)
        if job is not None and predicate(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {jobs.get_job(db, job_id)}")


def training(job: dict) -> bool:
    return job["status"] == "running" and (job.get("progress") or {}).get("stage") == "train"
