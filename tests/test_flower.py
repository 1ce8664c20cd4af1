"""Flower as compose runs it: no MongoDB credentials, no state file (its shelve is pickle), and no
worker control or task sending through its API (--read_only), tried against a real Flower process."""

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from console.localservers import free_port, wait_for_port
from tests.celery_worker import ROOT

LOGIN = "admin:a-real-secret"


def _flower_command():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = list(compose["services"]["flower"]["command"])
    assert command[:4] == ["celery", "-A", "worker", "flower"]
    return command


def _status(port, method, path, login=LOGIN):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=b"{}" if method == "POST" else None)  # fmt: skip
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
@pytest.mark.slow
def test_flower_refuses_worker_control_and_task_sending_and_writes_no_state(redis_url, tmp_path):
    port = free_port()
    command = [c for c in _flower_command() if not c.startswith("--port=")]
    argv = [sys.executable, "-m", *command[:4], f"--port={port}", "--address=127.0.0.1", *command[4:]]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "FLOWER_BASIC_AUTH": LOGIN,
           "CELERY_BROKER_URL": f"{redis_url}/0", "CELERY_RESULT_BACKEND": f"{redis_url}/1"}  # fmt: skip
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60, proc)
        assert _status(port, "GET", "/api/workers", login=None) == 401
        assert _status(port, "GET", "/api/tasks") == 200  # reading works
        for path in ("/api/worker/shutdown/gpu0@host", "/api/worker/pool/restart/gpu0@host",
                     "/api/worker/pool/grow/gpu0@host?n=4", "/api/task/async-apply/eduranker.train_reranker",
                     "/api/task/send-task/eduranker.train_reranker", "/api/task/revoke/some-id"):  # fmt: skip
            assert _status(port, "POST", path) == 403, path
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert sorted(p.name for p in work.iterdir()) == []  # no flower.db shelve (nor anything else)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]  # nor in its home
