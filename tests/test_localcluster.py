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

from console.localservers import mongo_url, secantus_server
from tests.celery_worker import PATIENCE, ROOT


def _get(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _poll_flower_progress(base, job_id, timeout=30):
    """Flower's task page and task info for `job_id` once its events show training progress."""
    deadline = time.monotonic() + timeout * PATIENCE
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
    env.update(MAX_LENGTH="48", TORCH_THREADS="1")  # one thread, as every test process (tests/conftest.py)
    from console.localservers import free_port

    env["FLOWER_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.localcluster", "--data-dir", str(tmp_path), "--keep-running", "--seed", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 600 * PATIENCE
    try:
        flower_while_training = None
        for line in proc.stdout:
            lines.append(line)
            training = re.search(r"job (\S+): train epoch", line)
            if training and flower_while_training is None:
                # What an operator sees in Flower while the job trains (login as docs/operations.md says).
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
            deadline_tagged = time.monotonic() + 60 * PATIENCE
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
        # The first model passed the screen and became the challenger; users' interleaved searches promoted it.
        assert any("'outcome': 'CHALLENGER v0001" in (t.get("result") or "") for t in tasks.values()), tasks
        assert "challenge promoted: users prefer the challenger" in output, output
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


def _cluster(tmp_path, *args, timeout=1500):
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "CELERY_BROKER_URL", "NUM_EPOCHS")}
    from console.localservers import free_port

    env.update(MAX_LENGTH="48", TORCH_THREADS="1", FLOWER_PORT=str(free_port()))
    argv = [sys.executable, "-m", "console.localcluster", "--data-dir", str(tmp_path), "--seed", "1", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
@pytest.mark.slow
def test_started_again_on_its_data_it_shows_a_job_from_before_and_ends_after_its_own_first_job(tmp_path):
    first = _cluster(tmp_path, "--timeout", "1", "--epochs", "1")
    assert first.returncode == 1 and "no job started by this run ended" in first.stdout, first.stdout + first.stderr
    # Between the two runs a person asks for a job (recorded, not yet sent): it is older than the next run.
    server = secantus_server(tmp_path / "secantus").start()
    try:
        client = pymongo.MongoClient(mongo_url(server.port), tz_aware=True)
        from eduranker.store import jobs

        db = client["edu_ranker_db"]
        assert jobs.create_job(db, "manual-before", trigger={"reason": "by hand"}, overrides={"num_epochs": 1})
        client.close()
    finally:
        server.stop()

    second = _cluster(tmp_path, "--epochs", "1")
    out = second.stdout
    assert second.returncode == 0, out[-4000:] + second.stderr[-3000:]
    # The job from before is shown to its outcome, and the run ended after the first job it started.
    assert re.search(r"job manual-before: (PROMOTED|REJECTED|FAILED)", out), out
    own = re.findall(r"job (auto-\S+): (CHALLENGER|PROMOTED|REJECTED|FAILED|CANCELLED)", out)
    assert own and out.index("job manual-before: ") < out.index(f"job {own[0][0]}: {own[0][1]}"), out
    assert "demo settings: MAX_LENGTH 48" in out
    # Its first job ended before it stopped; a retrain the producer started once users had decided the
    # challenge may be what the stop cancels, never that first job.
    assert f"job {own[0][0]}: cancelled (was" not in out, out


def test_fresh_removes_what_a_run_wrote_and_nothing_else(tmp_path):
    from console.localcluster import RUN_FILES, clear_data_dir

    for name in ("secantus", "redis", "logs", "models"):
        (tmp_path / name / "inner").mkdir(parents=True)
    (tmp_path / "flower.db").write_text("x")
    (tmp_path / "cluster.env").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    clear_data_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert len(RUN_FILES) == 6


def test_a_stop_cancels_only_the_automatic_jobs_this_run_started():
    from datetime import UTC, datetime, timedelta

    from console.cluster import started_by_this_run

    attached = datetime(2026, 1, 1, tzinfo=UTC)
    later, earlier = attached + timedelta(seconds=5), attached - timedelta(seconds=5)
    assert started_by_this_run({"automatic": True, "created_at": later}, attached)
    assert started_by_this_run({"automatic": True, "created_at": attached.replace(tzinfo=None)}, attached)
    assert not started_by_this_run({"automatic": True, "created_at": earlier}, attached)  # a run before this one
    assert not started_by_this_run({"automatic": False, "created_at": later}, attached)  # a person asked for it


def test_an_invalid_flag_stops_the_demo_with_one_line_and_status_2(tmp_path):
    # As --help says: 2 for an invalid setting, one line naming it, before anything is started.
    env = {k: v for k, v in os.environ.items() if k not in ("NUM_EPOCHS",)}
    argv = [sys.executable, "-m", "console.localcluster", "--data-dir", str(tmp_path), "--epochs", "0"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == ["invalid setting: NUM_EPOCHS=0: must be at least 1"], done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_the_cluster_env_names_flower_and_its_login(tmp_path):
    from console.cluster import FLOWER_PASSWORD, FLOWER_USER, Cluster
    from eduranker.settings import Settings

    Cluster(tmp_path, Settings(), 5601).write_env(tmp_path / "cluster.env")
    env = subprocess.run(["bash", "-c", f"source {tmp_path / 'cluster.env'} && env"], capture_output=True, text=True)
    values = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)
    assert values["FLOWER_URL"] == "http://127.0.0.1:5601"
    assert values["FLOWER_BASIC_AUTH"] == f"{FLOWER_USER}:{FLOWER_PASSWORD}"
