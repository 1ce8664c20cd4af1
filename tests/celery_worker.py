"""A real Celery worker process for tests: `celery -A worker worker -Q training -c 1`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from eduranker.localcluster import ROOT
from eduranker.localcluster import child_env as settings_env
from eduranker.settings import Settings

__all__ = ["ROOT", "settings_env", "start_worker", "stop_worker"]


def start_worker(settings: Settings, log_path: Path, name: str = "test") -> subprocess.Popen:
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training", "-c", "1"]
    argv += ["--loglevel", "INFO", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        argv, cwd=ROOT, env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_worker(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
