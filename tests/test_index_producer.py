"""One producer process leads every index, each in a loop of its own: a real `python -m producer` with
two indexes, one of them broken (its champion record names a version its registry lacks), on real
SecantusDB and redis."""

import base64
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import redis

from console import demo
from eduranker.store import connect, jobs
from producer.state import load_state
from tests.celery_worker import PATIENCE, ROOT, settings_env


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def serve_in(db, name: str, seed: int) -> list:
    """The demo's searches made in search `name`: served results, feedback not given yet."""
    rng = demo.random.Random(seed)
    corpus = demo.insert_corpus(db, rng)
    db.user_queries.update_many({"index": {"$exists": False}}, {"$set": {"index": name}})
    return list(demo.feedback_updates(demo.serve_results(db, corpus, rng), rng, noise=0.1))


@pytest.mark.integration
def test_a_failing_duty_of_one_index_stops_no_other_index(db, settings, redis_url, tmp_path):
    s = replace(
        settings,
        indexes=json.dumps({"a": {"owns": {"query.index": "a"}}, "b": {"owns": {"query.index": "b"}}}),
        celery_broker_url=f"{redis_url}/11",
        train_min_feedback=20,
        train_cooldown_seconds=0,
        producer_lease_seconds=2,
        online_refresh_seconds=1,
        metrics_port=0,
    )
    queue = redis.Redis.from_url(s.celery_broker_url)
    queue.flushdb()
    # Index b's champion record names a version its registry lacks: its duties that read it fail.
    db["b.champion"].insert_one({"_id": "current", "version": "b-v0009", "chain": ["b-v0009"], "seq": 3})
    served = {"a": serve_in(db, "a", 1), "b": serve_in(db, "b", 2)}
    log_path = tmp_path / "producer.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer"], cwd=ROOT, env=settings_env(s), stdout=log, stderr=log
        )
    a, b = connect(s.for_index("a")), connect(s.for_index("b"))
    try:
        for items in served.values():
            for inference_id, value in items[:40]:
                demo.give_feedback(db, inference_id, value)
        # b's reconcile fails at every pass, and is reported as b's, not a's.
        failing = lambda: sorted(k for k, v in (load_state(b).get("duties") or {}).items() if v.get("failures"))  # noqa: E731
        assert wait_for(lambda: failing()), (load_state(b), log_path.read_text()[-3000:])
        assert wait_for(lambda: jobs.latest_job(a) is not None and jobs.latest_job(a)["sent_at"] is not None)
        # Each index's job, in its own records, on its own queue; the default index (owning nothing) none.
        assert jobs.latest_job(a)["_id"].startswith("a-auto-")
        assert wait_for(lambda: jobs.latest_job(b) is not None and jobs.latest_job(b)["sent_at"] is not None)
        assert queue.llen("training.a") == 1 and queue.llen("training.b") == 1 and queue.llen("training") == 0
        assert "online" in failing()  # the guard's refresh reads the champion's document
        assert not any(v.get("failures") for v in (load_state(a).get("duties") or {}).values()), load_state(a)
        assert jobs.latest_job(connect(s)) is None
        assert proc.poll() is None  # the process goes on
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log_path.read_text()
    assert "index-b" in text and "index-a" in text  # each line names the index whose loop wrote it


DELAY_IN_B = """
import json
from worker.tasks import train_reranker
r = train_reranker.delay(index="b", reason="by hand in b")
print(json.dumps({"id": r.id}), flush=True)
"""


@pytest.mark.integration
def test_a_manual_job_asked_for_one_index_is_that_indexes_on_its_queue(db, settings, redis_url):
    """`train_reranker.delay(index="b")` from a shell, no worker running: the job is recorded among b's
    jobs under a b- id, and its message waits on b's queue carrying its index."""
    s = replace(settings, indexes=json.dumps({"b": {"owns": {"query.index": "b"}}}),
                celery_broker_url=f"{redis_url}/10", celery_result_backend=f"{redis_url}/10")  # fmt: skip
    queue = redis.Redis.from_url(s.celery_broker_url)
    queue.flushdb()
    out = subprocess.run([sys.executable, "-c", DELAY_IN_B], cwd=ROOT, env=settings_env(s), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    job_id = json.loads(out.stdout.splitlines()[-1])["id"]
    job = jobs.get_job(connect(s.for_index("b")), job_id)
    assert job_id.startswith("b-manual-") and job is not None and job["trigger"]["reason"] == "by hand in b"
    assert jobs.get_job(connect(s), job_id) is None  # not the default index's
    (message,) = [json.loads(m) for m in queue.lrange("training.b", 0, -1)]
    assert message["headers"]["id"] == job_id and queue.llen("training") == 0
    assert json.loads(base64.b64decode(message["body"]))[1] == {"job_id": job_id, "index": "b"}


@pytest.mark.integration
def test_a_worker_of_another_index_is_no_worker_for_this_one(settings, redis_url, tmp_path):
    """The producer's check before it fails an unclaimed job asks the workers for their queues: a live
    worker of index a is no worker for index b's jobs (which then wait, saying so, instead of failing)."""
    from eduranker.queue import make_celery
    from producer.workers import workers_serving
    from tests.celery_worker import start_worker, stop_worker

    two = {"a": {"owns": {"query.index": "a"}}, "b": {"owns": {"query.index": "b"}}}
    s = replace(settings, indexes=json.dumps(two), celery_broker_url=f"{redis_url}/9")
    app = make_celery(s)
    worker = start_worker(s, tmp_path / "worker.log", name="only-a", queues="training.a")
    try:
        assert wait_for(lambda: workers_serving(app, "training.a")), (tmp_path / "worker.log").read_text()[-2000:]
        assert not workers_serving(app, "training.b") and not workers_serving(app, "training")
    finally:
        stop_worker(worker)
