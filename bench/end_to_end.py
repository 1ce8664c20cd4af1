"""From the threshold-crossing feedback to a registered version, with the real producer and worker.

    .venv/bin/python bench/end_to_end.py [--pairs 1000] [--epochs 3] [--max-length 256]

Starts SecantusDB and redis-server on loopback, a real Celery worker (`-c 1`) and the real producer,
with TRAIN_MIN_FEEDBACK = `--pairs`. Writes `--pairs` distinct judged results (demo queries × resources);
the last write crosses the threshold. Printed: seconds from that write to the version's registration,
the job's own stage timings, and the peak RSS of the process that trained (the worker's pool child).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console import demo  # noqa: E402
from console.cluster import child_env, default_base_model  # noqa: E402
from console.localservers import mongo_url, redis_server, secantus_server  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs  # noqa: E402
from eduranker.store.connection import INFERENCES  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def judged_results(db, n: int, seed: int) -> list[tuple]:
    """`n` distinct (query, resource) results served without feedback; returns (id, like/dislike) to give."""
    rng = random.Random(seed)
    corpus = demo.insert_corpus(db, rng)
    combos = [(q, r) for q in corpus.query_ids for r in corpus.resource_ids]
    if n > len(combos):
        raise SystemExit(f"the demo corpus has {len(combos)} distinct pairs; ask for fewer")
    # Every on-subject result and off-subject ones for the rest, so likes clear the minority threshold.
    on = [c for c in combos if corpus.subject_of_query[c[0]] == corpus.subject_of_resource[c[1]]]
    off = [c for c in combos if c not in set(on)]
    picks = rng.sample(on, min(len(on), n // 2))
    picks += rng.sample(off, n - len(picks))
    rng.shuffle(picks)
    now = datetime.now(UTC)
    docs = [{"query_id": corpus.query_ids[q], "resource_id": corpus.resource_ids[r], "rank": 1, "score": 0.0,
             "model_version": None, "created_at": now} for q, r in picks]  # fmt: skip
    ids = db[INFERENCES].insert_many(docs).inserted_ids
    out = []
    for inference_id, (q, r) in zip(ids, picks, strict=True):
        relevant = corpus.subject_of_query[q] == corpus.subject_of_resource[r]
        liked = relevant != (rng.random() < 0.05)
        out.append((inference_id, "like" if liked else "dislike"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--precision", default="auto", help="TRAIN_PRECISION for the worker (auto, fp32, bf16, fp16)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="end-to-end-"))
    mongo = secantus_server(tmp / "secantus").start()
    broker = redis_server(tmp / "redis").start()
    url = f"redis://127.0.0.1:{broker.port}"
    settings = replace(
        Settings.from_env({}),
        mongodb_url=mongo_url(mongo.port), mongodb_db="end_to_end_bench", celery_broker_url=f"{url}/0",
        celery_result_backend=f"{url}/1", models_dir=str(tmp / "models"), base_model_name=default_base_model(),
        num_epochs=args.epochs, max_length=args.max_length, train_min_feedback=args.pairs, train_cooldown_seconds=0,
        train_precision=args.precision,
    )  # fmt: skip
    env = child_env(settings)
    db = connect(settings)
    ensure_indexes(db)
    procs = []
    try:
        to_give = judged_results(db, args.pairs, seed=0)
        logs = open(tmp / "processes.log", "wb")  # noqa: SIM115 - the children's for their lifetime
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training", "-c",
                                   "1", "-n", "bench@%h"], cwd=ROOT, env=env, stdout=logs, stderr=logs)  # fmt: skip
        producer = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env, stdout=logs, stderr=logs)
        procs += [worker, producer]
        time.sleep(10)  # both ready: the measured span starts at the crossing write, not at start-up
        for inference_id, value in to_give[:-1]:
            demo.give_feedback(db, inference_id, value)
        time.sleep(2)
        crossed = time.monotonic()
        demo.give_feedback(db, *to_give[-1])

        peak, job = 0.0, None
        while time.monotonic() - crossed < 900:
            for pid in children(worker.pid):
                peak = max(peak, peak_rss_mb(pid))
            job = jobs.latest_job(db)
            if job is not None and job["status"] in jobs.TERMINAL:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - crossed
        if job is None or job["status"] not in jobs.TERMINAL:
            print(f"no finished job after {elapsed:.0f} s; see {tmp / 'processes.log'}")
            return 1
        registered = job.get("version") is not None
        print(f"pairs {job['snapshot']['pairs']} (train {job['split']['train']}, held out {job['split']['test']}), "
              f"{args.epochs} epochs, max_length {args.max_length}, {os.cpu_count()} cores")  # fmt: skip
        print(f"crossing write → version {job.get('version')} {'registered' if registered else 'MISSING'} "
              f"({job['status']}): {elapsed:.1f} s")  # fmt: skip
        print(f"job stages (s): {job.get('timings')}")
        if registered:
            record = db["model_versions"].find_one({"version": job["version"]}) or {}
            print(f"trained on {record.get('device')}, precision "
                  f"{(record.get('hyperparameters') or {}).get('precision')}")  # fmt: skip
        print(f"peak RSS of the training process: {peak:.0f} MB")
        return 0 if registered else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.client.drop_database(settings.mongodb_db)
        broker.stop()
        mongo.stop()


if __name__ == "__main__":
    sys.exit(main())
