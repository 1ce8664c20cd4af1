"""Two search indexes trained at once by two real Celery workers, one per index's queue (`-Q training.a`,
`-Q training.b`): the jobs run at the same time, each registers its index's first version in its own
registry and models folder from its own feedback only; and a worker never takes another queue's job.

The jobs meet at a gate once their snapshots are recorded (tests/gated_worker.py): each waits there until
the other has arrived, so both are running at one moment whatever the machine's speed. One worker
consuming both queues could never get both jobs past it (its one process holds the first at the gate).
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from console import demo
from eduranker.settings import Settings
from eduranker.store import connect, jobs, versions
from eduranker.store.connection import INFERENCES, USER_QUERIES
from producer.outbox import request_training
from tests.celery_worker import PATIENCE, start_worker, stop_worker, wait_for_job

INDEXES = {
    "a": {"owns": {"query.index": "a"}, "TRAIN_MIN_FEEDBACK": 20, "MIN_FEEDBACK": 10},
    "b": {"owns": {"query.index": "b"}, "TRAIN_MIN_FEEDBACK": 20, "MIN_FEEDBACK": 10},
}


@pytest.fixture()
def two_index_settings(settings, redis_url):
    s = replace(
        settings,
        indexes=json.dumps(INDEXES),
        celery_broker_url=f"{redis_url}/14",
        celery_result_backend=f"{redis_url}/15",
        num_epochs=1,
    )
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()
    yield s
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()


def write_feedback(db, index: str, seed: int, withdraw_every: int = 0) -> dict[str, int]:
    """The demo's searches marked as index `index`'s (`user_queries.index`), every result judged, then
    every `withdraw_every`-th reaction taken back (one of each search's six, so that the held-out
    searches keep enough for the gate); returns the reactions left, by label."""
    demo.seed_feedback(db, seed=seed)
    db[USER_QUERIES].update_many({"index": {"$exists": False}}, {"$set": {"index": index}})
    own = db[USER_QUERIES].distinct("_id", {"index": index})
    mine = {"query_id": {"$in": own}, "feedback": {"$in": ["like", "dislike"]}}
    if withdraw_every:
        for inference in list(db[INFERENCES].find(mine, {"_id": 1}).sort("_id", 1))[::withdraw_every]:
            demo.give_feedback(db, inference["_id"], None)
    return {label: db[INFERENCES].count_documents({**mine, "feedback": label}) for label in ("like", "dislike")}


def version_folders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "versions").iterdir()) if (root / "versions").exists() else []


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_train_two_indexes_at_once_each_from_its_own_feedback(db, two_index_settings, tmp_path):
    s: Settings = two_index_settings
    written = {"a": write_feedback(db, "a", seed=2), "b": write_feedback(db, "b", seed=3, withdraw_every=6)}
    assert written["a"] != written["b"]  # a snapshot holding the other index's rows cannot match its own count
    gate = {"JOB_GATE_DIR": str(tmp_path / "gate"), "JOB_GATE_PARTIES": "2",
            "JOB_GATE_TIMEOUT_S": str(int(300 * PATIENCE))}  # fmt: skip
    workers = {}
    for name in ("a", "b"):  # both started before any job is sent (a job sent earlier waits in its queue)
        workers[name] = start_worker(s, tmp_path / f"worker-{name}.log", name=f"w{name}",
                                     queues=f"training.{name}", main="tests.gated_worker", env=gate)  # fmt: skip
    try:
        sent = {name: request_training(reason=f"index {name}", settings=s.for_index(name)) for name in ("a", "b")}
        ended = {
            name: wait_for_job(connect(s.for_index(name)), job_id, lambda j: j["status"] in jobs.TERMINAL, timeout=300)
            for name, job_id in sent.items()
        }
    finally:
        for proc in workers.values():
            stop_worker(proc)
    logs = {name: (tmp_path / f"worker-{name}.log").read_text()[-3000:] for name in workers}

    a, b = ended["a"], ended["b"]
    for name, job in ended.items():
        assert job["status"] in (jobs.SUCCEEDED, jobs.REJECTED), (job.get("reason"), logs[name])
        assert job["_id"].startswith(f"{name}-manual-")
        assert job["worker"].startswith(f"w{name}@")  # the worker of the index's own queue ran it
    # Both were running at once: each started before the other ended.
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], (a, b)
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "gate").iterdir()) == ["a", "b"]

    models = Path(s.models_dir)
    for name, job in ended.items():
        version = f"{name}-v0001"
        assert job["version"] == version
        registry = connect(s.for_index(name))
        doc = versions.get_version(registry, version)
        assert doc["job_id"] == job["_id"]
        assert [v["version"] for v in registry["model_versions"].find({}, {"version": 1})] == [version]
        # Only its own feedback: every reaction written for the index, none of the other's.
        for summary in (job["snapshot"], doc["snapshot"]):
            assert summary["rows_seen"] == sum(written[name].values()), summary
            assert summary["pairs"] == sum(written[name].values()), summary
            assert summary["label_counts"] == written[name], summary
        # Its folder under MODELS_DIR/<index>/, and nothing of it elsewhere.
        assert doc["artifact_path"] == f"versions/{version}"
        assert (models / name / "versions" / version / "training_metadata.json").is_file()
        assert version_folders(models / name) == [version]
    assert version_folders(models) == []  # the default index trained nothing
    assert connect(s)["model_versions"].count_documents({}) == 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_of_one_index_never_takes_another_index_job(db, two_index_settings, tmp_path):
    s: Settings = two_index_settings
    worker = start_worker(s, tmp_path / "worker.log", name="wa", queues="training.a")
    try:
        # b's job first, then two of a's (the second waits for the first's slot and is sent as it ends):
        # a worker that consumed training.b would take b's job before a's second, its queues being read
        # in turn. Index a has no feedback, so each of its jobs ends at once (refused), proving the worker
        # consumes its own queue.
        b_job = request_training(reason="index b", settings=s.for_index("b"))
        a_jobs = [request_training(reason="index a", settings=s.for_index("a")) for _ in range(2)]
        a_db = connect(s.for_index("a"))
        a_ends = [wait_for_job(a_db, job_id, lambda j: j["status"] in jobs.TERMINAL, timeout=120) for job_id in a_jobs]
    finally:
        stop_worker(worker)
    assert [job["worker"].split("@")[0] for job in a_ends] == ["wa", "wa"]
    b_end = jobs.get_job(connect(s.for_index("b")), b_job)
    assert b_end is not None and b_end["status"] == jobs.QUEUED and b_end.get("started_at") is None, b_end
    assert b_end.get("worker") is None and b_end["attempts"] == 0
    broker = redis.Redis.from_url(s.celery_broker_url)
    assert broker.llen("training.b") == 1  # b's message is still waiting in b's queue
    assert broker.llen("training.a") == 0
