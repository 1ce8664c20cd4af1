"""Flower's task list as an operator reads it (its datatable, what the page's table shows): a cancelled
job's Result column gives its outcome, and a job recorded waiting sorts with the newest, not last.
A real worker, a real Flower and real events over redis-server."""

import base64
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import replace

import pytest

from console.cluster import FLOWER_COLUMNS, child_env
from console.localservers import free_port, wait_for_port
from eduranker.queue import announce_waiting, make_celery, send_training_job
from eduranker.store import ensure_indexes, jobs
from tests.celery_worker import PATIENCE, ROOT, start_worker, stop_worker

LOGIN = "admin:a-real-secret"


def _rows(port):
    """The first page of the task list, newest received first (the page's default order)."""
    columns = FLOWER_COLUMNS.split(",")
    query = {"draw": 1, "start": 0, "length": 15, "search[value]": "", "order[0][column]": columns.index("received"),
             "order[0][dir]": "desc", **{f"columns[{i}][data]": name for i, name in enumerate(columns)}}  # fmt: skip
    request = urllib.request.Request(f"http://127.0.0.1:{port}/tasks/datatable?{urllib.parse.urlencode(query)}")
    request.add_header("Authorization", "Basic " + base64.b64encode(LOGIN.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def _flower_hears_the_worker(port, timeout=300):
    """Flower's event capture is connected once a worker's own events (its heartbeats) reached it: events
    are not stored by the broker, so a task sent before then would never show in its list."""

    def heard() -> bool:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/workers?json=1")
        request.add_header("Authorization", "Basic " + base64.b64encode(LOGIN.encode()).decode())
        with urllib.request.urlopen(request, timeout=30) as response:
            return any(str(w.get("hostname", "")).startswith("test@") for w in json.loads(response.read())["data"])

    deadline = time.monotonic() + timeout * PATIENCE
    while not heard():
        assert time.monotonic() < deadline, "Flower never heard from the worker"
        time.sleep(0.5)


def _wait_rows(port, predicate, timeout=60):
    deadline = time.monotonic() + timeout * PATIENCE
    while True:
        rows = _rows(port)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.slow
def test_a_cancelled_job_shows_its_outcome_and_a_waiting_job_sorts_with_the_newest(settings, db, redis_url, tmp_path):
    s = replace(settings, celery_broker_url=f"{redis_url}/14", celery_result_backend=f"{redis_url}/14")
    ensure_indexes(db)
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}", "--address=127.0.0.1",
            "--read_only=True", f"--tasks_columns={FLOWER_COLUMNS}"]  # fmt: skip
    flower = subprocess.Popen(argv, cwd=ROOT, env={**child_env(s), "FLOWER_BASIC_AUTH": LOGIN},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = start_worker(s, tmp_path / "worker.log")
    try:
        wait_for_port(port, 60, flower)
        _flower_hears_the_worker(port)
        # An operator cancels a job; its run ends in FAILURE with the outcome as its message.
        assert jobs.create_job(db, "job-cancelled", trigger={"reason": "test"})
        assert jobs.cancel_job(db, "job-cancelled", "an operator stopped it")
        app = make_celery(s)
        send_training_job(app, "job-cancelled")
        # The outcome comes as the run's last progress event, from the task's process; the failure event
        # from the worker's: on a busy machine either may reach Flower first, so wait for both.
        failed = lambda rows: any(  # noqa: E731
            r["uuid"] == "job-cancelled" and r["state"] == "FAILURE" and str(r["result"]).startswith("CANCELLED")
            for r in rows
        )
        rows = _wait_rows(port, failed, timeout=300)  # a worker's start beside a busy suite takes minutes
        cancelled = next((r for r in rows if r["uuid"] == "job-cancelled"), {"rows": rows})
        assert cancelled.get("state") == "FAILURE", cancelled
        assert str(cancelled["result"]).startswith("CANCELLED: an operator stopped it"), cancelled
        # A job recorded behind it is announced WAITING: newer than every task, it heads the list.
        announce_waiting(app, "job-waiting", "job-cancelled")
        rows = _wait_rows(port, lambda rows: any(r["uuid"] == "job-waiting" for r in rows))
        assert [r["uuid"] for r in rows][:2] == ["job-waiting", "job-cancelled"], rows
        assert rows[0]["state"] == "WAITING"
    finally:
        stop_worker(worker)
        flower.terminate()
        flower.wait(60)
