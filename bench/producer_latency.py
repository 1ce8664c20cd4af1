"""Producer under load: feedback event → job enqueued latency, and how far the producer lags the stream.

    .venv/bin/python bench/producer_latency.py [--rate 1000] [--seconds 30] [--every 2000]

Starts SecantusDB and redis-server on loopback (or uses MONGODB_URL / CELERY_BROKER_URL), the real
`python -m producer` process, writer threads that set feedback the way the search API does at `--rate`
writes per second, and a stand-in worker that pops each message from the `training` queue and finishes
its job at once, so the producer may enqueue the next one after every `--every` new feedbacks.

Printed:
- writes/s the writers sustained (the database is the limit when this is below `--rate`);
- latency: the write that made the count reach the threshold (its acknowledgement) → the message on
  the broker, p50 / p99 / max over every job;
- lag: now − wall time of the newest event the producer has evaluated, sampled every 100 ms;
- the producer's CPU seconds per second, and that no job was enqueued twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console import demo  # noqa: E402
from console.localservers import mongo_url, redis_server, secantus_server  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs  # noqa: E402
from eduranker.store.connection import INFERENCES, TRAINING_JOBS  # noqa: E402
from eduranker.store.feedback import latest_feedback_at  # noqa: E402
from producer.history import read_history  # noqa: E402
from producer.state import load_state  # noqa: E402
from producer.trigger import read_counts  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def prepare_inferences(db, n: int, seed: int) -> list:
    """A corpus and `n` served results without feedback yet; returns their ids in random order."""
    rng = random.Random(seed)
    corpus = demo.insert_corpus(db, rng)
    queries, resources = list(corpus.query_ids.values()), list(corpus.resource_ids.values())
    now = datetime.now(UTC)
    docs = [
        {"query_id": rng.choice(queries), "resource_id": rng.choice(resources), "rank": i % 10 + 1,
         "score": rng.random(), "model_version": None, "created_at": now}
        for i in range(n)
    ]  # fmt: skip
    ids = []
    for start in range(0, n, 5000):
        ids += db[INFERENCES].insert_many(docs[start : start + 5000]).inserted_ids
    rng.shuffle(ids)
    return ids


def write_feedback(settings: Settings, ids: list, rate: float, stop_at: float, log: list) -> None:
    """One writer: `rate` feedback updates per second on its own ids; logs (acknowledged at, feedback_at)."""
    db = connect(settings)
    rng = random.Random(len(ids))
    started = time.monotonic()
    for i, inference_id in enumerate(ids):
        due = started + i / rate
        now = time.monotonic()
        if now >= stop_at:
            break
        if due > now:
            time.sleep(due - now)
        at = datetime.now(UTC)
        demo.give_feedback(db, inference_id, "like" if rng.random() < 0.5 else "dislike", at)
        log.append((time.monotonic(), at.replace(microsecond=at.microsecond // 1000 * 1000)))


def run_writers(settings: Settings, ids: list, rate: float, seconds: float, n: int) -> list[list]:
    logs: list[list] = [[] for _ in range(n)]
    stop_at = time.monotonic() + seconds
    writers = [
        threading.Thread(target=write_feedback, args=(settings, ids[i::n], rate / n, stop_at, logs[i]))
        for i in range(n)
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    return logs


def read_stream(settings: Settings, stop: threading.Event, lags: list) -> None:
    """The least a change-stream consumer can do: read each event and note how late it arrived."""
    from producer.stream import WATCH_PIPELINE

    with connect(settings)[INFERENCES].watch(WATCH_PIPELINE, max_await_time_ms=250) as stream:
        while not stop.is_set():
            change = stream.try_next()
            if change is not None and change.get("wallTime"):
                lags.append(time.time() - change["wallTime"].replace(tzinfo=UTC).timestamp())


def fake_worker(settings: Settings, stop: threading.Event, received: dict) -> None:
    """Pop each training message, note when it arrived, finish its job the way a worker would."""
    import redis

    broker = redis.Redis.from_url(settings.celery_broker_url)
    db = connect(settings)
    while not stop.is_set():
        item = broker.brpop(["training"], timeout=1)
        if item is None:
            continue
        arrived = time.monotonic()
        job_id = json.loads(item[1])["headers"]["id"]
        received.setdefault(job_id, []).append(arrived)
        job = jobs.get_job(db, job_id)
        claimed = jobs.claim_job(db, job_id, worker="bench", stale_after_s=settings.job_stale_after_s)
        if claimed is not None:
            jobs.finish_job(db, job_id, claimed["attempts"], jobs.SUCCEEDED,
                            snapshot={"watermark": job["trigger"]["watermark"]})  # fmt: skip


def sample_lag(settings: Settings, stop: threading.Event, lags: list) -> None:
    """Now minus the wall time of the newest event the producer evaluated (server and bench share a clock)."""
    db = connect(settings)
    while not stop.is_set():
        seen = load_state(db).get("last_event_wall_time")
        if seen is not None:
            lags.append(time.time() - seen.replace(tzinfo=UTC).timestamp())
        stop.wait(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def crossing_times(writes: list, job_watermarks: list, every: int) -> list[float]:
    """When each job's threshold was reached: the acknowledgement of the `every`-th feedback after the
    previous job's watermark (the first job's threshold is the same in this benchmark)."""
    writes = sorted(writes, key=lambda w: w[1])
    stamps = [w[1] for w in writes]
    times = []
    previous = None
    for watermark in job_watermarks:
        start = 0 if previous is None else bisect_right(stamps, previous)
        after = sorted(w[0] for w in writes[start:])
        times.append(after[every - 1] if len(after) >= every else float("nan"))
        previous = watermark
    return times


def measure_baseline(
    settings: Settings, args: argparse.Namespace, name: str, prepared: int, fresh_in: Path | None
) -> tuple[float, list[float]]:
    """Writes/s into a twin database with nothing watching, or with a bare change-stream reader; on a
    fresh server of its own in `fresh_in` (None: the same server, another database)."""
    server = secantus_server(fresh_in / name.replace(" ", "_")).start() if fresh_in else None
    try:
        twin = replace(settings, mongodb_db=f"producer_bench_{name.replace(' ', '_').replace(',', '')}")
        if server is not None:
            twin = replace(twin, mongodb_url=mongo_url(server.port))
        return _baseline_writes(twin, args, name, prepared)
    finally:
        if server is not None:
            server.stop()


def _baseline_writes(twin: Settings, args: argparse.Namespace, name: str, prepared: int) -> tuple[float, list[float]]:
    twin_db = connect(twin)
    twin_db.client.drop_database(twin.mongodb_db)
    ensure_indexes(twin_db)
    print(f"baseline: {args.baseline_seconds:.0f} s of writes, {name} ...", flush=True)
    twin_ids = prepare_inferences(twin_db, prepared, seed=1)
    halt, stream_lags = threading.Event(), []
    reader = threading.Thread(target=read_stream, args=(twin, halt, stream_lags), daemon=True)
    if name != "alone":
        reader.start()
        time.sleep(1)
    began = time.monotonic()
    written = sum(len(log) for log in run_writers(twin, twin_ids, args.rate, args.baseline_seconds, args.writers))
    rate = written / (time.monotonic() - began)
    halt.set()
    if reader.is_alive():
        reader.join(5)
    twin_db.client.drop_database(twin.mongodb_db)
    return rate, stream_lags


def print_database_cost(before: dict, after: dict, seconds: float) -> None:
    """The commands the producer sent while the writers ran (its own counter, saved with its state)."""
    if "db_commands" not in after:
        print("producer's database commands: not reported by this producer")
        return
    old = before.get("db_commands") or {}
    sent = {name: n - old.get(name, 0) for name, n in after["db_commands"].items() if n - old.get(name, 0)}
    evaluations = after.get("evaluations", 0) - before.get("evaluations", 0)
    total = sum(sent.values())
    per_evaluation = f"{total / evaluations:.2f} per evaluation over {evaluations}" if evaluations else "no evaluations"
    print(f"producer's database commands: {total / seconds:.1f}/s, {per_evaluation}: "
          + ", ".join(f"{name} {n}" for name, n in sorted(sent.items(), key=lambda kv: -kv[1])))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="feedback writes per second, all writers")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=int, default=2000, help="TRAIN_NEW_FEEDBACK for the run")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=None, help="default: --seconds")
    parser.add_argument(
        "--no-lag-sampling",
        action="store_true",
        help="do not read the producer's state every 100 ms (the lag figure is then absent)",
    )
    args = parser.parse_args()
    args.baseline_seconds = args.baseline_seconds or args.seconds

    tmp = Path(tempfile.mkdtemp(prefix="producer-bench-"))
    servers = []
    env = dict(os.environ)
    external_mongo = "MONGODB_URL" in env
    if "MONGODB_URL" not in env:
        servers.append(secantus_server(tmp / "secantus").start())
        env["MONGODB_URL"] = mongo_url(servers[-1].port)
    if "CELERY_BROKER_URL" not in env:
        servers.append(redis_server(tmp / "redis").start())
        env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{servers[-1].port}/0"
    env.update(MONGODB_DB="producer_bench", TRAIN_MIN_FEEDBACK=str(args.every), TRAIN_NEW_FEEDBACK=str(args.every),
               TRAIN_MIN_MINORITY="0.2", TRAIN_COOLDOWN_SECONDS="0")  # fmt: skip
    env.setdefault("CELERY_RESULT_BACKEND", env["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/1")
    settings = Settings.from_env(env)
    db = connect(settings)
    db.client.drop_database(settings.mongodb_db)
    ensure_indexes(db)
    total = int(args.rate * args.seconds * 1.1) + 1000
    print(f"preparing {total} served results ...", flush=True)
    ids = prepare_inferences(db, total, seed=0)

    # The same writes with nothing watching (what the server does alone), and with a bare change-stream
    # reader (what the server's change stream costs and how late it delivers). SecantusDB's change streams
    # cost more as its oplog grows (the same bare stream, run later in one server's life, let the writers
    # do a quarter of what they did at first), so each baseline gets a fresh server with the same
    # prepared data as the producer's; against an outside MONGODB_URL, twin databases on it, and the
    # bare stream once more after the producer's run.
    fresh_in = None if external_mongo else tmp
    baselines = {name: measure_baseline(settings, args, name, total, fresh_in) for name in ("alone", "bare stream")}
    alone_rate = baselines["alone"][0]

    producer_log = open(tmp / "producer.log", "wb")  # noqa: SIM115 - the producer's for its lifetime
    producer = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env,
                                stdout=producer_log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while load_state(db).get("resume_token") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    stop = threading.Event()
    received: dict[str, list[float]] = {}
    lags: list[float] = []
    helpers = [threading.Thread(target=fake_worker, args=(settings, stop, received), daemon=True)]
    if not args.no_lag_sampling:
        helpers.append(threading.Thread(target=sample_lag, args=(settings, stop, lags), daemon=True))
    for thread in helpers:
        thread.start()

    print(f"writing {args.rate:.0f} feedback/s for {args.seconds:.0f} s with {args.writers} writers ...", flush=True)
    cpu_before, started = cpu_seconds(producer.pid), time.monotonic()
    state_before = load_state(db)
    logs = run_writers(settings, ids, args.rate, args.seconds, args.writers)
    elapsed = time.monotonic() - started
    time.sleep(2)  # let the last crossing reach the broker
    producer_cpu = cpu_seconds(producer.pid) - cpu_before
    state_after = load_state(db)
    stop.set()
    for thread in helpers:
        thread.join(5)
    producer.terminate()
    producer.wait(30)
    if external_mongo:
        baselines["bare stream, after"] = measure_baseline(settings, args, "bare stream, after", total, None)

    writes = [w for log in logs for w in log]
    made = list(db[TRAINING_JOBS].find().sort("created_at", 1))
    watermarks = [j["trigger"]["watermark"].replace(tzinfo=UTC) for j in made]
    crossings = crossing_times(writes, watermarks, args.every)
    latencies = [received[j["_id"]][0] - t for j, t in zip(made, crossings, strict=True) if j["_id"] in received]
    latencies = [x for x in latencies if x == x]
    duplicates = sum(len(v) - 1 for v in received.values())
    busy_lags = lags[: int(args.seconds / 0.1)]

    rate = len(writes) / elapsed
    bare_rate, bare_lags = baselines["bare stream"]
    after_rate = baselines.get("bare stream, after", (0.0, []))[0]
    print(
        f"\nwrites/s (asked {args.rate:.0f}): nothing watching {alone_rate:.0f}; "
        f"a bare change stream {bare_rate:.0f} ({bare_rate / alone_rate:.2f}); "
        f"the producer {rate:.0f} ({rate / alone_rate:.2f})"
    )
    after = f" (against the bare stream after the producer's run: {rate / after_rate:.2f})" if after_rate else ""
    print(f"writers' rate with the producer ÷ with a bare change stream: {rate / bare_rate:.2f}{after}")
    print_database_cost(state_before, state_after, elapsed + 2)
    if bare_lags:
        print(f"bare change stream delivery delay: p50 {statistics.median(bare_lags) * 1000:.0f} ms, "
              f"p99 {percentile(bare_lags, 0.99) * 1000:.0f} ms")  # fmt: skip
    print(f"jobs enqueued: {len(made)} (one per {args.every} new feedbacks); duplicate messages: {duplicates}")
    if latencies:
        print(f"event → enqueue latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")  # fmt: skip
    if busy_lags:
        print(f"producer lag while writing: p50 {statistics.median(busy_lags) * 1000:.0f} ms, "
              f"p99 {percentile(busy_lags, 0.99) * 1000:.0f} ms, max {max(busy_lags) * 1000:.0f} ms")  # fmt: skip
    print(f"producer CPU: {producer_cpu / elapsed:.2f} s per s; events seen {load_state(db).get('events_seen')}")
    print("one evaluation's reads, after the run (ms):", flush=True)
    history = read_history(db, settings.auto_retry_limit)
    for name, read in (
        ("requeue silent jobs", lambda: jobs.requeue_silent(db, silent_after_s=settings.job_requeue_after_s)),
        ("job history", lambda: read_history(db, settings.auto_retry_limit)),
        ("window counts", lambda: read_counts(db, history, cap=args.every)),
        ("watermark", lambda: latest_feedback_at(db, since=history.window_since)),
    ):
        began = time.perf_counter()
        for _ in range(5):
            read()
        print(f"  {name}: {(time.perf_counter() - began) / 5 * 1000:.1f}")
    db.client.drop_database(settings.mongodb_db)
    for server in reversed(servers):
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
