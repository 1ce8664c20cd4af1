"""Smoke test of the one-command local cluster: start, demo data, a version appears, Flower, stop."""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pymongo
import pytest

from eduranker.localservers import mongo_url, secantus_server
from tests.celery_worker import ROOT


def _get(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _poll_flower_progress(base, job_id, timeout=30):
    """Flower's task page and task info for `job_id` once its events show training progress."""
    deadline = time.monotonic() + timeout
    while True:
        _, info = _get(f"{base}/api/task/info/{job_id}", "admin:eduranker")
        info = json.loads(info)
        if info.get("state") == "PROGRESS" or time.monotonic() > deadline:
            _, page = _get(f"{base}/task/{job_id}", "admin:eduranker")
            return page.decode(), info
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.slow
def test_local_cluster_retrains_from_feedback_and_stops_everything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "CELERY_BROKER_URL")}
    # Default epochs: one epoch over ~300 demo pairs sometimes leaves a model the gate rightly rejects.
    env.pop("NUM_EPOCHS", None)
    env.update(MAX_LENGTH="48")
    from eduranker.localservers import free_port

    env["FLOWER_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-m", "eduranker.localcluster", "--data-dir", str(tmp_path), "--keep-running", "--seed", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 600
    try:
        flower_while_training = None
        for line in proc.stdout:
            lines.append(line)
            training = re.search(r"job (\S+): train epoch", line)
            if training and flower_while_training is None:
                # What an operator sees in Flower while the job trains (login as the README says).
                base = f"http://127.0.0.1:{env['FLOWER_PORT']}"
                flower_while_training = _poll_flower_progress(base, training.group(1))
            if "search API now serves v0001" in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert "champion: v0001" in output, output
        # The demo's search API picked the champion up without a restart and tags what it serves.
        assert "search API now serves v0001 (no restart)" in output, output
        url = re.search(r"MongoDB: (\S+)", output).group(1)
        client = pymongo.MongoClient(url)
        try:
            inferences = client["edu_ranker_db"]["inferences"]
            deadline_tagged = time.monotonic() + 60
            while not inferences.find_one({"model_version": "v0001"}) and time.monotonic() < deadline_tagged:
                time.sleep(0.5)
            assert inferences.find_one({"model_version": "v0001"}) is not None
            assert inferences.find_one({"model_version": None}) is not None  # served before the promotion
        finally:
            client.close()
        assert (tmp_path / "models" / "champion" / "model.safetensors").exists()

        flower = f"http://127.0.0.1:{env['FLOWER_PORT']}/api/tasks"
        with pytest.raises(urllib.error.HTTPError) as denied:
            _get(flower)
        assert denied.value.code == 401
        status, body = _get(flower, "admin:eduranker")
        tasks = json.loads(body)
        assert status == 200
        assert any(t["name"] == "eduranker.train_reranker" and t["state"] == "SUCCESS" for t in tasks.values())
        # A promotion reads as one in the task list's Result column (a rejection reads "REJECTED ...").
        assert any("'outcome': 'PROMOTED v0001" in (t.get("result") or "") for t in tasks.values()), tasks
        # A second terminal reaches the cluster with one line.
        status = subprocess.run(["bash", "-c", f"source {tmp_path / 'cluster.env'} && eduranker status"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "champion: v0001" in status.stdout and "(agrees)" in status.stdout, status.stdout
        page, info = flower_while_training
        assert "PROGRESS" in page and "train: epoch" in page, page[-2000:]
        assert info["state"] == "PROGRESS" and "loss" in info["result"], info
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    assert "stopping every process started" in rest
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    # Stopped with a job possibly running: it was recorded as cancelled, so the next run starts unblocked.
    server = secantus_server(tmp_path / "secantus").start()
    try:
        client = pymongo.MongoClient(mongo_url(server.port))
        assert client["edu_ranker_db"]["training_jobs"].count_documents({"status": {"$in": ["queued", "running"]}}) == 0
        client.close()
    finally:
        server.stop()
