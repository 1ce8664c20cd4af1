"""A real Prometheus (Debian's package) scrapes a real producer on loopback and evaluates deploy/'s alert
rules (with `for:` shortened, expressions unchanged): the scraped values are the database's, a job failing
again and again fires the failures alert, and killing the only worker fires the no-worker alert."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from console import demo
from console.localservers import free_port, wait_for_port
from eduranker.store import jobs
from eduranker.store.feedback import count_labels
from tests.celery_worker import PATIENCE, ROOT, settings_env, start_worker, stop_worker

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as reply:
        return list(json.load(reply)["data"]["result"])


def _value(base: str, promql: str) -> float | None:
    result = _query(base, promql)
    return float(result[0]["value"][1]) if result else None


def _firing(base: str) -> set[str]:
    with urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=10) as reply:
        alerts = json.load(reply)["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def _eventually(what: str, check: Callable[[], bool], timeout: float = 240.0, logs: tuple[Path, ...] = ()) -> None:
    """Generous timeouts: a safety net on a loaded machine, not a claim about speed."""
    deadline = time.monotonic() + timeout * PATIENCE
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"never happened: {what}\n{tails}")
        time.sleep(0.5)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _prometheus_config(tmp: Path, producer_ports: list[int]) -> Path:
    """The project's rules with every `for:` at 1 s, scraped and evaluated every second."""
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules["groups"][0]["rules"]:
        if "for" in rule:
            rule["for"] = "1s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "eduranker-producer",
                "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in producer_ports]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml"


@pytest.fixture()
def live(settings, redis_url, tmp_path) -> Iterator[dict[str, Any]]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus (Debian's package) is installed by scripts/setup"
    s = replace(
        settings, celery_broker_url=f"{redis_url}/0", celery_result_backend=f"{redis_url}/1",
        metrics_port=free_port(), metrics_refresh_seconds=1.0,
        # Jobs start at once and every one fails in its first stage (the worker wants more feedback).
        train_min_feedback=4, train_cooldown_seconds=0.0, auto_retry_limit=3, min_feedback=100_000,
    )  # fmt: skip
    logs = (
        tmp_path / "producer0.log",
        tmp_path / "worker.log",
        tmp_path / "prometheus.log",
        tmp_path / "producer1.log",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_worker(s, logs[1]))
        # Two producers, a leader and a standby, each serving its metrics on its own port.
        ports = [s.metrics_port, free_port()]
        for i, port in enumerate(ports):
            env = settings_env(replace(s, metrics_port=port))
            procs.append(_start([sys.executable, "-m", "producer"], env, tmp_path / f"producer{i}.log"))
            wait_for_port(port, timeout=120, proc=procs[-1])
        web = free_port()
        argv = [exe, f"--config.file={_prometheus_config(tmp_path, ports)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"]  # fmt: skip
        procs.append(_start(argv, dict(os.environ), logs[2]))
        wait_for_port(web, timeout=120, proc=procs[-1])
        yield {"settings": s, "base": f"http://127.0.0.1:{web}", "worker": procs[0], "logs": logs}
    finally:
        for proc in reversed(procs):
            if proc is procs[0]:
                stop_worker(proc)
            else:
                _stop(proc)


@pytest.mark.integration
@pytest.mark.slow
def test_prometheus_sees_the_databases_figures_and_fires_the_failure_and_no_worker_alerts(db, live):
    base, logs = live["base"], live["logs"]
    demo.seed_feedback(db, seed=3)
    held = count_labels(db)
    _eventually(
        "both producers are scraped", lambda: _value(base, 'sum(up{job="eduranker-producer"})') == 2.0, logs=logs
    )
    _eventually("one leads, one stands by",
                lambda: _value(base, "sum(eduranker_producer_leader)") == 1.0
                and _value(base, 'count(eduranker_producer_info{role="standby"})') == 1.0, logs=logs)  # fmt: skip
    for label, n in held.items():
        _eventually(f"{label}s as the database holds them",
                    lambda label=label, n=n: _value(base, f'min(eduranker_feedback_total{{label="{label}"}})') == n,
                    logs=logs)  # fmt: skip
    _eventually("a worker answers", lambda: _value(base, "min(eduranker_workers_alive)") == 1.0, logs=logs)

    # The automatic job fails, is retried AUTO_RETRY_LIMIT times, and each retry fails too.
    _eventually("the failures alert fires", lambda: "EduRankerJobsFailing" in _firing(base), logs=logs)
    failed = jobs.count_jobs(db, {"status": jobs.FAILED})
    assert failed >= 3
    held_failed = lambda: jobs.count_jobs(db, {"status": jobs.FAILED})  # noqa: E731
    _eventually("the failed jobs as the database holds them",
                lambda: _value(base, 'max(eduranker_jobs{status="failed"})') == held_failed(), logs=logs)  # fmt: skip
    assert "EduRankerNoWorker" not in _firing(base)  # the worker is alive: quiet

    os.killpg(live["worker"].pid, signal.SIGKILL)  # the only worker, gone without a word
    live["worker"].wait()
    _eventually("the no-worker alert fires", lambda: "EduRankerNoWorker" in _firing(base), logs=logs)
    assert _value(base, "max(eduranker_workers_alive)") == 0.0
