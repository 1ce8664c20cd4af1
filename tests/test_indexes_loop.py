"""Three search indexes configured by INDEXES alone, each running its loop (feedback → job → version →
champion) beside the others on one database and one models folder: real SecantusDB and redis, the real
producer loops (one per index, as `python -m producer` runs them) and real jobs on the tiny model."""

import json
from pathlib import Path

import pytest
import redis
from pymongo import MongoClient

from console import demo
from console.cli import main as cli
from eduranker.pipeline.artifacts import HELDOUT_PAIRS
from eduranker.queue import make_celery
from eduranker.store import connect, jobs, versions
from eduranker.store.connection import CommandCounter
from eduranker.store.feedback import count_labels
from producer.__main__ import leaders
from producer.metrics import MetricsCache
from tests.conftest import make_settings
from worker.job import run_training_job

# The third index, `c`, is one more entry of configuration: no code names it.
INDEXES = {
    "a": {"owns": {"query.index": "a"}},
    "b": {"owns": {"query.index": "b"}, "TRAIN_MIN_FEEDBACK": 150},
    "c": {"owns": {"query.index": "c"}, "NUM_EPOCHS": 2},
}
SEEDS = {"a": 1, "b": 2, "c": 3}


def seed_index(db, name: str, seed: int) -> int:
    """The demo's searches and judgements, made in search `name`: each query carries `index` and a
    text of its own (`[a] ...`), so a held-out text shows whose feedback it was."""
    written = demo.seed_feedback(db, seed=seed)
    untagged = {"index": {"$exists": False}}
    for doc in db.user_queries.find(untagged, {"query_text": 1}):
        tagged = {"index": name, "query_text": f"[{name}] {doc['query_text']}"}
        db.user_queries.update_one({"_id": doc["_id"]}, {"$set": tagged})
    return written


@pytest.fixture(scope="module")
def loop(mongo_server_url, redis_url, tiny_model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    base = make_settings(mongo_server_url, str(root / "models"), tiny_model_path).with_overrides(
        indexes=json.dumps(INDEXES), celery_broker_url=f"{redis_url}/13", train_min_feedback=100,
        train_cooldown_seconds=0, metrics_port=0, min_heldout_queries=5, min_heldout_pairs=30, num_epochs=1,
        gate_confidence=0.6, min_improvement=0.0,  # a mechanics test: one epoch, a lenient gate
    )  # fmt: skip
    redis.Redis.from_url(base.celery_broker_url).flushdb()
    raw = MongoClient(base.mongodb_url, tz_aware=True)[base.mongodb_db]
    written = {name: seed_index(raw, name, seed) for name, seed in SEEDS.items()}
    # The producer's loops, one per index, as the process builds them; each evaluates once and enqueues.
    producers = leaders(base, connect(base), make_celery(base), CommandCounter())
    decisions = {}
    for producer in producers:
        assert producer.lease.acquire()
        decisions[producer.settings.index] = producer.evaluate()
        producer.lease.release()  # as a stopped producer does: the next one leads at once
    outcomes = {}
    for name in SEEDS:
        s = base.for_index(name)
        (job,) = jobs.unfinished_jobs(connect(s))
        outcomes[name] = run_training_job(s, job["_id"], worker_name=f"test-{name}")
    yield base, written, decisions, outcomes
    raw.client.drop_database(base.mongodb_db)


@pytest.mark.integration
def test_each_index_runs_feedback_job_version_champion_on_its_own(loop):
    base, written, decisions, outcomes = loop
    assert not decisions["default"].train  # the default index owns what no other claims: nothing here
    for name in SEEDS:
        s = base.for_index(name)
        db = connect(s)
        assert decisions[name].train, decisions[name]
        assert outcomes[name]["job_id"].startswith(f"{name}-auto-")
        assert outcomes[name]["index"] == name  # what Flower shows of the task's result
        assert outcomes[name]["version"] == f"{name}-v0001" and outcomes[name]["promoted"], outcomes[name]
        champion = versions.get_champion(db)
        assert champion is not None and champion["version"] == f"{name}-v0001"
        # Its records are its own collections; its folder is MODELS_DIR/<name>.
        assert db.client[base.mongodb_db][f"{name}.model_versions"].count_documents({}) == 1
        pointer = Path(base.models_dir) / name / "champion"
        assert pointer.resolve() == (Path(base.models_dir) / name / "versions" / f"{name}-v0001").resolve()
        assert count_labels(db)["like"] + count_labels(db)["dislike"] == written[name]
    assert versions.read_champion(connect(base)).version is None  # the default index trained nothing


@pytest.mark.integration
def test_no_index_trains_or_is_judged_on_another_indexes_feedback(loop):
    base, written, _decisions, _outcomes = loop
    for name in SEEDS:
        s = base.for_index(name)
        doc = versions.get_version(connect(s), f"{name}-v0001")
        assert doc["snapshot"]["rows_seen"] == written[name]  # its own reactions, no other's
        heldout = Path(s.models_dir) / "versions" / f"{name}-v0001" / HELDOUT_PAIRS
        queries = {json.loads(line)["query"] for line in heldout.read_text(encoding="utf-8").splitlines()}
        assert queries and all(q.startswith(f"[{name}] ") for q in queries), sorted(queries)[:3]


@pytest.mark.integration
def test_the_metrics_carry_each_index_and_the_cli_lists_them(loop, capsys):
    base, written, _decisions, _outcomes = loop
    cache = MetricsCache(connect(base), base, "test")
    assert cache.refresh()
    found = {(s.name, s.labels.get("index"), s.labels.get("label") or s.labels.get("version")): s.value
             for m in cache.collect() for s in m.samples}  # fmt: skip
    for name in SEEDS:
        feedback = [found[("eduranker_feedback_total", name, label)] for label in ("like", "dislike")]
        assert sum(feedback) == written[name]
        assert found[("eduranker_champion_info", name, f"{name}-v0001")] == 1
    assert found[("eduranker_feedback_total", "default", "like")] == 0
    assert cli(["indexes"], settings=base) == 0
    listing = capsys.readouterr().out
    for name in SEEDS:
        assert f"{name}: feedback with query.index in ['{name}']" in listing
        assert f"queue training.{name}" in listing and f"champion {name}-v0001" in listing
    assert cli(["--index", "b", "versions"], settings=base) == 0
    table = capsys.readouterr().out
    assert "b-v0001" in table and "a-v0001" not in table


@pytest.mark.integration
def test_a_reranker_of_one_index_serves_its_champion_and_names_its_index(loop):
    from eduranker.serving import ChampionReranker

    base, *_ = loop
    ranker = ChampionReranker(base.models_dir, index="c", poll_seconds=60, variant="bf16")
    try:
        assert ranker.version == "c-v0001"
        result = ranker.rerank("[c] photosynthesis", ["plants make sugar", "the french revolution"])
        assert {f["index"] for f in result.inference_fields()} == {"c"}
        assert {f["model_version"] for f in result.inference_fields()} == {"c-v0001"}
    finally:
        ranker.close()


@pytest.mark.integration
def test_only_one_indexes_users_reacting_moves_only_that_index(loop):
    """More feedback in search `a` alone: a's loop asks for a job; b's and c's see nothing new, ask for
    none, and their champions and records stay exactly as they were."""
    base, written, _decisions, _outcomes = loop
    untouched = {name: versions.read_champion(connect(base.for_index(name))) for name in ("b", "c")}
    raw = MongoClient(base.mongodb_url, tz_aware=True)[base.mongodb_db]
    more = seed_index(raw, "a", seed=11)
    producers = {p.settings.index: p for p in leaders(base, connect(base), make_celery(base), CommandCounter())}
    for producer in producers.values():
        assert producer.lease.acquire()
    assert not producers["b"].evaluate().train and not producers["c"].evaluate().train
    assert producers["a"].evaluate().train
    (job,) = jobs.unfinished_jobs(connect(base.for_index("a")))
    assert job["trigger"]["counts"]["like"] + job["trigger"]["counts"]["dislike"] == more  # a's new feedback alone
    for name, record in untouched.items():
        db = connect(base.for_index(name))
        assert versions.read_champion(db) == record and jobs.unfinished_jobs(db) == []
        assert [d["version"] for d in versions.list_versions(db)] == [f"{name}-v0001"]
