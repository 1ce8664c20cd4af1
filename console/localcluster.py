"""One-command local cluster: SecantusDB, redis-server, a worker, the producer and Flower on loopback.

Writes demo feedback the way the search API does, shows the automatic retrain as it happens, and
prints the champion. Ctrl-C stops every process it started (`--keep-running` waits for it).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from console import demo
from console.cluster import FLOWER_PASSWORD, FLOWER_USER, Cluster, default_base_model
from console.localservers import (
    free_port,
    port_in_use,
)
from console.progress import Follower, follow_jobs
from eduranker.settings import Settings, SettingsError, load_or_exit
from eduranker.store import connect, jobs, versions
from eduranker.store.types import Db

if TYPE_CHECKING:
    from eduranker.serving import ChampionReranker


def stream_feedback(
    db: Db,
    rng: random.Random,
    gap_s: Callable[[], float | None],
    stop_when: Callable[[], bool],
    ranker: ChampionReranker | None = None,
) -> int:
    """Serve results (ranked by `ranker`, the search API's reranker) and let users react over time until
    `stop_when()`; `gap_s()` is the pause before each feedback (None: hold back while it says so).
    Returns feedback written."""
    corpus = demo.insert_corpus(db, rng)
    written = 0
    while not stop_when():
        served = demo.serve_results(db, corpus, rng, ranker=ranker)
        for inference_id, value in demo.feedback_updates(served, rng, noise=0.05):
            while (gap := gap_s()) is None and not stop_when():
                time.sleep(0.5)
            if stop_when():
                break
            demo.give_feedback(db, inference_id, value, datetime.now(UTC) + timedelta(microseconds=written))
            written += 1
            time.sleep(gap or 0)
    return written


class Pace:
    """The demo users' pace: `per_second` until the first job this run started has ended (to reach the
    first trigger soon), `later_per_second` after it (`--keep-running`), and no feedback at all while a
    job is active. So each job trains on about the feedback that triggered it (the first on about
    `TRAIN_MIN_FEEDBACK`, each retrain on about `TRAIN_NEW_FEEDBACK` more than the last), not on all
    that a fast writer would add while the previous one trained, and the jobs settle instead of running
    back to back on ever larger snapshots."""

    def __init__(self, db: Db, per_second: float, later_per_second: float):
        self.db, self.per_second, self.later_per_second = db, per_second, later_per_second
        self.first_done = threading.Event()
        self._checked, self._active = 0.0, False

    def gap_s(self) -> float | None:
        if time.monotonic() - self._checked > 1.0:  # one indexed read a second, not one per feedback
            self._checked = time.monotonic()
            self._active = jobs.active_job(self.db) is not None
        if self._active:
            return None
        return 1 / (self.later_per_second if self.first_done.is_set() else self.per_second)


def print_champion(db: Db, settings: Settings) -> None:
    champion = versions.get_champion(db)
    if champion is None:
        print("no champion yet")
        return
    before, after = champion["metrics"]["before"], champion["metrics"]["after"]
    print(f"\nchampion: {champion['version']}  ({champion['gate_reason']})")
    from eduranker.pipeline.evaluation import METRICS

    for key in dict.fromkeys((METRICS.primary.name, *METRICS.names)):  # the gate's metric first
        b, a = before.get(key), after.get(key)
        print(f"  {key:<18} {b if b is None else round(b, 4)!s:>8} → {a if a is None else round(a, 4)!s:>8}")
    folder = Path(settings.models_dir) / champion["artifact_path"]
    print(f"report: {folder / 'training_report.txt'}")
    print(f"serve it with CROSS_ENCODER_PATH={Path(settings.models_dir).resolve() / 'champion'}")


def demo_run(settings: Settings, args: argparse.Namespace, db: Db, data_dir: Path, cluster: Cluster) -> int:
    """Serve and write demo feedback; show every job from the start (those not ended when this run
    attached, and every one created since), each outcome, until the first job created since `attached`
    (the server's clock) has ended; print the champion. With --keep-running go on writing at a settled
    pace, showing each job and each switch of the search API to a new champion."""
    # The demo's search API: reranks every served list with the champion, following promotions
    # without a restart, a 5% holdback on the previous champion, each result tagged with its version.
    import torch

    from eduranker.serving import ChampionReranker

    torch.set_num_threads(1)  # one thread per request; the worker has the other cores (shared_host_worker_threads)
    ranker = ChampionReranker(settings.models_dir, base_model=settings.base_model_name, poll_seconds=1,
                              holdback=0.05, max_length=settings.max_length,
                              variant=settings.serving_variant)  # fmt: skip
    started, stop_writing = time.monotonic(), threading.Event()
    # Jobs from before this run that had not ended when it started: shown to their outcome, not waited for.
    earlier, attached = cluster.earlier, cluster.started_at
    pace = Pace(connect(settings), args.feedback_per_second, args.keep_running_feedback_per_second)
    writer = threading.Thread(
        target=stream_feedback,
        args=(connect(settings), random.Random(args.seed), pace.gap_s,
              lambda: stop_writing.is_set() or (pace.first_done.is_set() and not args.keep_running), ranker),
        daemon=True,
    )  # fmt: skip
    writer.start()
    follower = Follower(db)
    # --keep-running never gives up on a timer: it runs until Ctrl-C.
    deadline = None if args.keep_running else started + args.timeout
    job = follow_jobs(db, job_ids=earlier, since=attached, deadline=deadline, follower=follower,
                      end_when=lambda j: j["_id"] not in earlier)  # fmt: skip
    if job is not None and job.get("challenger"):  # users decide: keep serving until the producer does
        follow_challenge(db, str(job.get("version")), deadline)
    pace.first_done.set()
    if job is None:
        print(f"no job started by this run ended after {args.timeout:.0f} s; see {data_dir / 'logs'}")
        return 1
    print_champion(db, settings)
    if args.keep_running:
        print("\ncluster running; Ctrl-C stops it", flush=True)
        follow_for_good(follower, ranker, earlier, attached)
    stop_writing.set()
    writer.join(10)
    return 0


def follow_challenge(db: Db, version: str, deadline: float | None) -> None:
    """Print the challenge of `version` (served interleaved with the champion) until the producer ends it."""
    print(f"{version} is the challenger: the search API interleaves it with the champion; users decide", flush=True)
    shown = None
    while deadline is None or time.monotonic() < deadline:
        ended = versions.get_version(db, version).get("challenge") or {}
        line = ended.get("reason") if ended.get("outcome") else (ended.get("figures") or {}).get("decision")
        if line and line != shown:
            print(f"  challenge {ended.get('outcome') or 'running'}: {line}", flush=True)
            shown = line
        if ended.get("outcome"):
            return
        time.sleep(0.5)


def follow_for_good(
    follower: Follower, ranker: ChampionReranker, earlier: list[str], attached: datetime | None
) -> None:
    """Every job's progress and outcome, and each switch of the search API as its watcher makes it."""
    serving = ranker.version
    print(f"search API now serves {serving or 'the base model'} (no restart)", flush=True)
    while True:
        follower.poll(job_ids=earlier, since=attached)
        if ranker.version != serving:
            serving = ranker.version
            print(f"search API now serves {serving or 'the base model'} (no restart)", flush=True)
        time.sleep(0.5)


# What `--fresh` removes: the files a run of the local cluster writes under its data directory, no others.
RUN_FILES = ("secantus", "redis", "logs", "models", "flower.db", "cluster.env")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 the first job this run started ended (or Ctrl-C), 1 none ended within --timeout, "
        "2 an invalid setting.",
    )
    parser.add_argument("--data-dir", default=".local", help="where SecantusDB, redis and logs keep their files")
    fresh_help = "start from an empty data directory (removes its database, broker, logs and models first)"
    parser.add_argument("--fresh", action="store_true", help=fresh_help)
    parser.add_argument("--keep-running", action="store_true", help="keep the cluster up until Ctrl-C")
    parser.add_argument("--epochs", type=int, default=3, help="NUM_EPOCHS of the demo's jobs (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo users' clicks")
    pace, later = "demo users' feedbacks a second until the first job ends", "with --keep-running, after it"
    parser.add_argument("--feedback-per-second", type=float, default=40.0, help=f"{pace} (default 40)")
    parser.add_argument("--keep-running-feedback-per-second", type=float, default=5.0,
                        help=f"{later} (none while a job is active; default 5)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for the first job this run started to end (default 900)")  # fmt: skip
    return parser


def demo_settings(data_dir: Path, args: argparse.Namespace) -> Settings:
    """The embedded defaults: the offline MiniLM, 64-token pairs and a 30 s cooldown (each unless set in
    the environment), models under the data directory, the demo's fixed split key."""
    base = load_or_exit()
    try:  # a flag (`--epochs 0`) is held to its setting's check, and stops the run as a bad setting does
        return replace(
            base,
            models_dir=str(Path(os.environ.get("MODELS_DIR", data_dir / "models")).resolve()),
            base_model_name=default_base_model(),
            num_epochs=int(os.environ.get("NUM_EPOCHS", args.epochs)),
            max_length=int(os.environ.get("MAX_LENGTH", 64)),
            train_cooldown_seconds=float(os.environ.get("TRAIN_COOLDOWN_SECONDS", 30)),
            # A challenge is looked at every 5 s, so the demo shows users deciding within a minute or two.
            online_refresh_seconds=float(os.environ.get("ONLINE_REFRESH_SECONDS", 5)),
            split_key=base.split_key or demo.DEMO_SPLIT_KEY,
            torch_threads=int(
                os.environ.get("TORCH_THREADS", shared_host_worker_threads(len(os.sched_getaffinity(0))))
            ),
        )
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def shared_host_worker_threads(cores: int) -> int:
    """The worker's torch threads where the search API shares the host and takes one thread per request
    (the demo's API serves one request at a time): together no more threads than cores. On two cores,
    1 + 1 trained 2.0× faster and served 1.25× more requests than each taking every core
    (bench/shared_host_threads.py, docs/performance.md)."""
    return max(1, cores - 1)


def clear_data_dir(data_dir: Path) -> None:
    for name in RUN_FILES:
        path = data_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    settings = demo_settings(data_dir, args)
    if args.fresh:
        clear_data_dir(data_dir)
    flower_port = int(os.environ.get("FLOWER_PORT", 5555))
    if flower_port == 5555 and port_in_use(flower_port):
        flower_port = free_port()
    cluster = Cluster(data_dir, settings, flower_port)
    # Ctrl-C and SIGTERM both stop everything, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting SecantusDB, redis, worker, producer and Flower under {data_dir} ...", flush=True)
        settings = cluster.start()
        db = connect(settings)
        print(f"Flower: http://127.0.0.1:{flower_port}  (login {FLOWER_USER} / {FLOWER_PASSWORD})")
        print(f"MongoDB: {settings.mongodb_url}  broker: {settings.celery_broker_url}")
        cluster.write_env(data_dir / "cluster.env")
        print(f"in another terminal: source {data_dir / 'cluster.env'} && eduranker status")
        print(f"demo settings: MAX_LENGTH {settings.max_length}, NUM_EPOCHS {settings.num_epochs}, "
              f"TRAIN_COOLDOWN_SECONDS {settings.train_cooldown_seconds:.0f}, BASE_MODEL_NAME "
              f"{settings.base_model_name}")  # fmt: skip
        from producer.trigger import describe_next_trigger

        print(f"writing demo feedback (~{args.feedback_per_second:.0f}/s); next trigger: "
              f"{describe_next_trigger(db, settings)}", flush=True)  # fmt: skip
        return demo_run(settings, args, db, data_dir, cluster)
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping every process started ...", flush=True)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
