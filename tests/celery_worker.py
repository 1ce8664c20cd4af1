"""A real Celery worker process for tests: `celery -A worker worker -Q training -c 1`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from eduranker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for field in fields(settings):
        env[field.name.upper()] = str(getattr(settings, field.name))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


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
