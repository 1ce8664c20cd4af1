"""Jobs per hour over two search indexes: one worker consuming both queues, then one worker per queue.

    .venv/bin/python bench/jobs_per_hour.py [--jobs 4] [--epochs 1] [--max-length 128] [--threads 1]

Starts SecantusDB and redis-server on loopback, configures two indexes (INDEXES: `a` and `b`, each owning
the searches whose `user_queries.index` names it) and writes the demo feedback for each (48 searches,
six judged results each). Then, twice, on a fresh database and models folder:

1. one real Celery worker (`-Q training.a,training.b -c 1`),
2. two real Celery workers (`-Q training.a`, `-Q training.b`, each `-c 1`),

each ready before the first job is sent, and `--jobs` manual jobs sent at once, alternately to a and b
(`request_training(settings=s.for_index(...))`; an index runs one job at a time, the others wait for its
slot). Measured from the first job's record to the last one's end (the server's clock): jobs per hour
for each arrangement, their ratio, and each job's own running time. Every worker gets TORCH_THREADS =
`--threads`. The base model is the tests' offline MiniLM (BASE_MODEL_NAME overrides it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console import demo  # noqa: E402
from console.cluster import child_env, default_base_model  # noqa: E402
from console.localservers import mongo_url, redis_server, secantus_server  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs  # noqa: E402
from eduranker.store.connection import USER_QUERIES  # noqa: E402
from producer.outbox import request_training  # noqa: E402

INDEXES = ("a", "b")


def write_feedback(settings: Settings) -> None:
    """The demo's feedback once for each index, its searches marked as the index's."""
    db = connect(settings)
    for seed, name in enumerate(INDEXES, start=2):
        demo.seed_feedback(db, seed=seed)
        db[USER_QUERIES].update_many({"index": {"$exists": False}}, {"$set": {"index": name}})


def start_worker(settings: Settings, queues: str, name: str, log_path: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", queues, "-c", "1", "-n", f"{name}@%h",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, cwd=ROOT, env=child_env(settings), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def wait_ready(log_paths: list[Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() and " ready." in p.read_text(errors="replace") for p in log_paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not ready after {timeout:.0f} s; see {log_paths}")
        time.sleep(0.5)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(settings: Settings, workers: dict[str, str], n_jobs: int, logs: Path) -> dict[str, Any]:
    """`workers`: name → its `-Q`. Returns the arrangement's jobs per hour and its jobs' records."""
    ensure_indexes(connect(settings))
    write_feedback(settings)
    paths = {name: logs / f"{name}.log" for name in workers}
    procs = [start_worker(settings, queues, name, paths[name]) for name, queues in workers.items()]
    try:
        wait_ready(list(paths.values()))
        sent = [(INDEXES[i % len(INDEXES)], request_training(reason="bench", settings=settings.for_index(
            INDEXES[i % len(INDEXES)]))) for i in range(n_jobs)]  # fmt: skip
        dbs = {name: connect(settings.for_index(name)) for name in INDEXES}
        deadline = time.monotonic() + 3600
        while True:
            found = [jobs.get_job(dbs[index], job_id) for index, job_id in sent]
            if all(job is not None and job["status"] in jobs.TERMINAL for job in found):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs not over after an hour: {[j and j['status'] for j in found]}")
            time.sleep(1)
    finally:
        stop(procs)
    done = [job for job in found if job is not None]
    span = (max(j["finished_at"] for j in done) - min(j["created_at"] for j in done)).total_seconds()
    return {
        "span_s": span,
        "jobs_per_hour": len(done) * 3600 / span,
        "job_s": [(j["finished_at"] - j["started_at"]).total_seconds() for j in done],
        "statuses": [f"{j['_id'].split('-')[0]}:{j['status']}:{j.get('version')}" for j in done],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="TORCH_THREADS of every worker")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jobs-per-hour-"))
    mongo = secantus_server(tmp / "secantus").start()
    broker = redis_server(tmp / "redis").start()
    url = f"redis://127.0.0.1:{broker.port}"
    indexes = {name: {"owns": {"query.index": name}} for name in INDEXES}
    base = replace(
        Settings.from_env({}),
        mongodb_url=mongo_url(mongo.port), celery_broker_url=f"{url}/0", celery_result_backend=f"{url}/1",
        base_model_name=default_base_model(), indexes=json.dumps(indexes), num_epochs=args.epochs,
        max_length=args.max_length, torch_threads=args.threads, serving_variant="bf16", promotion_mode="offline",
        split_key=demo.DEMO_SPLIT_KEY,
    )  # fmt: skip
    arrangements = {
        "one worker, -Q training.a,training.b": {"both": "training.a,training.b"},
        "two workers, -Q training.a / -Q training.b": {"wa": "training.a", "wb": "training.b"},
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        for i, (label, workers) in enumerate(arrangements.items()):
            settings = replace(base, mongodb_db=f"jobs_per_hour_{i}", models_dir=str(tmp / f"models-{i}"))
            logs = tmp / f"logs-{i}"
            logs.mkdir()
            results[label] = run(settings, workers, args.jobs, logs)
            connect(settings).client.drop_database(settings.mongodb_db)
    finally:
        broker.stop()
        mongo.stop()

    print(f"{args.jobs} jobs over indexes a and b (288 judged results each), {args.epochs} epoch(s), max_length "
          f"{args.max_length}, TORCH_THREADS {args.threads} per worker; {os.cpu_count()} cores, CPU only")  # fmt: skip
    for label, r in results.items():
        each = f"{mean(r['job_s']):.1f} s on average, {min(r['job_s']):.1f}-{max(r['job_s']):.1f}"
        print(f"{label}: {r['jobs_per_hour']:.0f} jobs/hour ({r['span_s']:.1f} s for all; each job {each}) "
              f"{r['statuses']}")  # fmt: skip
    one, two = (r["jobs_per_hour"] for r in results.values())
    print(f"two workers / one worker: {two / one:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
