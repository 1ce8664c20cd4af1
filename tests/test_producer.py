"""The producer against real SecantusDB and redis-server processes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis

from console import demo
from console.localservers import mongo_url, redis_server, secantus_server
from eduranker.queue import make_celery
from eduranker.store import connect, jobs
from producer.state import load_state, save_state
from producer.stream import is_buffered
from producer.watcher import Producer
from tests.celery_worker import PATIENCE, ROOT, settings_env


@pytest.fixture()
def psettings(settings, redis_url):
    queue_db = int(settings.mongodb_db[-6:], 16) % 14 + 2  # a redis db of its own per test
    return replace(
        settings,
        celery_broker_url=f"{redis_url}/{queue_db}",
        train_min_feedback=20,
        train_min_minority=0.2,
        train_new_feedback=30,
        train_cooldown_seconds=0,
        # A producer killed with -9 keeps the lease until it expires: short, so restarts lead quickly.
        producer_lease_seconds=2,
    )


@pytest.fixture()
def queue(psettings):
    client = redis.Redis.from_url(psettings.celery_broker_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture()
def served(db):
    rng = demo.random.Random(5)
    corpus = demo.insert_corpus(db, rng)
    return list(demo.feedback_updates(demo.serve_results(db, corpus, rng), rng, noise=0.1))


def wait_for(predicate, timeout=30.0, interval=0.05):
    """True once `predicate()` holds; False after `timeout` × PATIENCE (a safety net, not a claim of speed)."""
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class ThreadedProducer:
    def __init__(self, settings):
        self.producer = Producer(settings, connect(settings), make_celery(settings), idle_eval_s=0.5)
        self.thread = threading.Thread(target=self.producer.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.producer.watching.wait(30), "producer never opened its change stream"
        return self.producer

    def __exit__(self, *exc):
        self.producer.stop()
        self.thread.join(20)


def finish_as_worker(db, job):
    """Stand in for the worker: claim the job and finish it with the watermark of what it trained on."""
    claimed = jobs.claim_job(db, job["_id"], worker="stand-in", stale_after_s=60)
    if claimed is not None:
        watermark = job["trigger"]["watermark"]
        jobs.finish_job(db, job["_id"], claimed["attempts"], jobs.SUCCEEDED, snapshot={"watermark": watermark})


def give(db, served_items, start=0):
    base = datetime.now(UTC)
    for i, (inference_id, value) in enumerate(served_items):
        demo.give_feedback(db, inference_id, value, base + timedelta(milliseconds=start + i))


@pytest.mark.integration
def test_feedback_written_like_the_api_triggers_one_job_at_the_threshold(db, psettings, queue, served):
    with ThreadedProducer(psettings) as producer:
        give(db, served[:19])
        assert wait_for(lambda: producer.events_seen >= 19)
        time.sleep(1.0)
        assert db.training_jobs.count_documents({}) == 0
        assert "19/20" in load_state(db)["last_decision"]
        give(db, served[19:21], start=19)
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        time.sleep(1.0)  # no second job while the first is queued
    job = db.training_jobs.find_one()
    assert job["_id"].startswith("auto-") and job["sent_at"] is not None
    assert job["trigger"]["reason"].startswith("first model")
    assert queue.llen("training") == 1
    assert db.training_jobs.count_documents({}) == 1


@pytest.mark.integration
def test_flipped_and_removed_feedback_is_counted(db, psettings, queue, served):
    with ThreadedProducer(psettings.with_overrides(train_min_feedback=1000)):
        give(db, served[:10])
        assert wait_for(lambda: sum(load_state(db).get("counts", {}).values()) == 10)
        likes = [i for i, v in served[:10] if v == "like"]
        demo.give_feedback(db, likes[0], "dislike")
        demo.give_feedback(db, likes[1], None)
        expected = {"like": len(likes) - 2, "dislike": 10 - len(likes) + 1}
        assert wait_for(lambda: load_state(db).get("counts") == expected)


@pytest.mark.integration
def test_a_retrain_job_records_the_true_like_and_dislike_split(db, psettings, queue, served):
    """A retrain's decision count stops at TRAIN_NEW_FEEDBACK (likes are counted first); the job is
    recorded with a count of the whole window, so its split is the feedback's, not the count's order."""
    producer = Producer(psettings, db, make_celery(psettings), holder="split-test")
    assert producer.lease.acquire()
    give(db, served[:25])
    assert producer.evaluate().train
    finish_as_worker(db, jobs.latest_job(db))
    time.sleep(0.05)
    base = datetime.now(UTC)  # after the first job's watermark
    for i, (inference_id, _) in enumerate(served[25:75]):  # 10 likes, then 40 dislikes; threshold 30
        demo.give_feedback(db, inference_id, "like" if i < 10 else "dislike", base + timedelta(milliseconds=i))
    time.sleep(0.1)  # the last feedback is in the server's past
    producer.housekept_at = 0.0  # read the history now: the first job has finished
    decision = producer.evaluate(events=50)
    assert decision.train and decision.reason.startswith("retrain")
    assert jobs.latest_job(db)["trigger"]["counts"] == {"like": 10, "dislike": 40}
    assert load_state(db)["counts"] == {"like": 10, "dislike": 40}


@pytest.mark.integration
def test_lost_history_drops_the_token_and_recounts(db, psettings, queue, served):
    give(db, served[:25])
    save_state(db, resume_token={"_data": "00deadbeef"})
    with ThreadedProducer(psettings):
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        assert wait_for(lambda: load_state(db).get("resume_token", {"_data": "00deadbeef"}) != {"_data": "00deadbeef"})
    assert load_state(db)["counts"] == {
        "like": sum(v == "like" for _, v in served[:25]),
        "dislike": sum(v == "dislike" for _, v in served[:25]),
    }


@pytest.mark.integration
def test_a_job_crossing_while_the_broker_is_down_is_sent_when_it_is_back(db, settings, tmp_path, served):
    broker = redis_server(tmp_path / "redis").start()
    s = replace(settings, celery_broker_url=f"redis://127.0.0.1:{broker.port}/0", train_min_feedback=20,
                train_cooldown_seconds=0)  # fmt: skip
    broker.stop()
    try:
        with ThreadedProducer(s):
            give(db, served[:25])
            assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
            time.sleep(1.5)
            assert db.training_jobs.find_one()["sent_at"] is None  # recorded, not yet sent
            broker.start()
            assert wait_for(lambda: db.training_jobs.find_one()["sent_at"] is not None, timeout=60)
        assert redis.Redis(port=broker.port).llen("training") == 1
    finally:
        broker.stop()


def _spawn_producer(settings, log):
    env = settings_env(settings)
    return subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env, stdout=log, stderr=log)


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_and_restart_misses_nothing_and_enqueues_nothing_twice(db, psettings, queue, served, tmp_path):
    """Phases of feedback, each crossing the threshold once; the producer is killed inside every phase."""
    log = open(tmp_path / "producer.log", "ab")  # noqa: SIM115
    proc = _spawn_producer(psettings, log)
    phases = [served[:22], served[22:55], served[55:88], served[88:121]]
    offset = 0
    try:
        for n, phase in enumerate(phases, start=1):
            half = len(phase) // 2
            give(db, phase[:half], start=offset)
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream, unsaved state and all
            proc.wait()
            give(db, phase[half:], start=offset + half)  # written while no producer runs
            offset += len(phase)
            proc = _spawn_producer(psettings, log)
            assert wait_for(lambda n=n: db.training_jobs.count_documents({}) == n, timeout=60), n
            # A worker finishes only a job whose message it received: recorded first, then sent.
            assert wait_for(lambda: jobs.latest_job(db)["sent_at"] is not None, timeout=60), n
            finish_as_worker(db, jobs.latest_job(db))
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0  # SIGTERM: saves and exits cleanly
    assert db.training_jobs.count_documents({}) == len(phases)
    assert queue.llen("training") == len(phases)  # one message per job, none sent twice


def test_producer_never_imports_torch_sentence_transformers_or_pandas():
    code = (
        "import sys; import producer, producer.watcher, producer.__main__;"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_a_stream_that_never_pauses_still_triggers_while_writes_go_on(db, psettings, queue, served):
    """Events arriving faster than the stream drains must not postpone every evaluation."""
    writing = threading.Event()
    writing.set()

    def writer(offset):
        client = connect(psettings)
        i = offset
        while writing.is_set():
            inference_id, value = served[i % len(served)]
            demo.give_feedback(client, inference_id, value, datetime.now(UTC))
            i += 4

    writers = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
    with ThreadedProducer(psettings):
        for thread in writers:
            thread.start()
        try:
            assert wait_for(lambda: db.training_jobs.count_documents({}) > 0, timeout=20), "no job while writes went on"
        finally:
            writing.clear()
            for thread in writers:
                thread.join(10)
    assert db.training_jobs.count_documents({}) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_the_database_restarting_under_the_producer_loses_no_feedback(psettings, queue, tmp_path):
    """SecantusDB stopped and started again on the same data while the producer watches it."""
    server = secantus_server(tmp_path / "db").start()
    s = replace(psettings, mongodb_url=mongo_url(server.port))
    client = connect(s)
    try:
        rng = demo.random.Random(9)
        corpus = demo.insert_corpus(client, rng)
        items = list(demo.feedback_updates(demo.serve_results(client, corpus, rng), rng, noise=0.1))
        with ThreadedProducer(s) as producer:
            give(client, items[:10])
            assert wait_for(lambda: sum(load_state(client).get("counts", {}).values()) == 10)
            server.stop()
            time.sleep(2)
            server.start()
            give(client, items[10:25], start=10)  # crosses 20 while the producer reconnects
            assert wait_for(lambda: client.training_jobs.count_documents({}) == 1, timeout=60)
            assert wait_for(lambda: producer.watching.is_set(), timeout=30)
            time.sleep(1)
        assert client.training_jobs.count_documents({}) == 1
        assert client.training_jobs.find_one()["sent_at"] is not None
        assert queue.llen("training") == 1
    finally:
        client.client.close()
        server.stop()


@pytest.mark.integration
def test_pymongo_still_tells_whether_a_change_is_buffered(db):
    """The drain's round-trip budget rests on a private pymongo cursor method; fail loudly if it goes."""
    with db.inferences.watch(max_await_time_ms=100) as stream:
        assert callable(stream._cursor._has_next)
        assert stream.try_next() is None and not is_buffered(stream)
        db.inferences.insert_many([{"feedback": "like"}, {"feedback": "dislike"}])
        first = stream.try_next() or stream.try_next()
        assert first is not None and is_buffered(stream)  # the second insert came in the same batch
        assert stream.try_next() is not None and not is_buffered(stream)


@pytest.mark.integration
@pytest.mark.parametrize("producers", [3])  # two leaders racing is a case of three
@pytest.mark.slow
def test_random_kills_during_5000_writes_give_the_jobs_a_calm_run_would(db, psettings, queue, tmp_path, producers):
    """A writer streams 5,000 reactions while `producers` producer processes run (one leads through the
    lease, the others stand by) and, at 16 random points of the stream, one of them chosen at random is
    killed -9 and restarted. The points are counted in writes, not seconds, so a slower machine makes
    the same kills, not more.

    Every job must be justified (at least the threshold of new feedback since the previous job's
    watermark), none may be missing at the end (fewer than the threshold since the last one), and no job
    may be recorded twice; a message resent after a kill between send and mark-sent is the only repeat.
    """
    threshold = 400
    s = replace(psettings, train_min_feedback=threshold, train_new_feedback=threshold)
    rng = demo.random.Random(21)
    corpus = demo.insert_corpus(db, rng)
    qids, rids = list(corpus.query_ids.values()), list(corpus.resource_ids.values())
    now = datetime.now(UTC)
    ids = db.inferences.insert_many(
        [{"query_id": rng.choice(qids), "resource_id": rng.choice(rids), "created_at": now} for _ in range(5000)]
    ).inserted_ids
    writing_done = threading.Event()
    progress = threading.Condition()
    written = 0

    def writer():
        nonlocal written
        client = connect(s)
        for inference_id in ids:
            demo.give_feedback(client, inference_id, "like" if rng.random() < 0.5 else "dislike")
            with progress:
                written += 1
                progress.notify_all()
        writing_done.set()

    def stand_in_worker():
        while not (writing_done.is_set() and settled.is_set()):
            for job in db.training_jobs.find({"status": "queued", "sent_at": {"$ne": None}}):
                finish_as_worker(db, job)
            time.sleep(0.1)

    settled = threading.Event()
    log = open(tmp_path / "producer.log", "ab")  # noqa: SIM115
    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=stand_in_worker, daemon=True)]
    procs = [_spawn_producer(s, log) for _ in range(producers)]
    kills, chance = 0, demo.random.Random(22)
    for thread in threads:
        thread.start()
    try:
        for at in sorted(chance.sample(range(1, len(ids)), 16)):
            with progress:
                while not progress.wait_for(lambda at=at: written >= at, timeout=1):
                    assert threads[0].is_alive(), "the writer stopped"
            victim = chance.randrange(producers)
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            time.sleep(chance.uniform(0.0, 0.5))  # writes go on meanwhile
            procs[victim] = _spawn_producer(s, log)
        threads[0].join()
        assert writing_done.is_set(), "the writer stopped"
        # Let the last producer catch up: a job finished after the last write is followed by the next
        # one at the producer's idle tick (5 s), so settle once a tick passes with no new job.
        deadline = time.monotonic() + 120 * PATIENCE
        while time.monotonic() < deadline:
            before = db.training_jobs.count_documents({})
            time.sleep(6)
            if db.training_jobs.count_documents({}) == before and not db.training_jobs.find_one({"status": "queued"}):
                break
    finally:
        settled.set()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(20)

    made = list(db.training_jobs.find().sort("created_at", 1))
    watermarks = [j["trigger"]["watermark"] for j in made]
    assert kills == 16 and len(made) >= 2
    previous = None
    for watermark in watermarks:
        window = {"feedback_at": {"$gt": previous, "$lte": watermark} if previous else {"$lte": watermark}}
        assert db.inferences.count_documents(window) >= threshold, (previous, watermark)
        previous = watermark
    assert db.inferences.count_documents({"feedback_at": {"$gt": previous}}) < threshold  # nothing missed
    messages = [json.loads(m)["headers"]["id"] for m in queue.lrange("training", 0, -1)]
    assert set(messages) == {j["_id"] for j in made}
    assert len(messages) - len(set(messages)) <= kills


@pytest.mark.integration
@pytest.mark.slow
def test_feedback_dated_a_year_ahead_does_not_freeze_the_trigger(db, psettings, queue, served):
    """A skewed client clock: feedback dated ahead is not counted before its time (the window ends at the
    server's now), the watermark is at most now, so later feedback still counts as new."""
    with ThreadedProducer(psettings):
        future = datetime.now(UTC) + timedelta(days=365)
        demo.give_feedback(db, served[0][0], served[0][1], future)
        give(db, served[1:20], start=1)
        time.sleep(1.0)
        assert db.training_jobs.count_documents({}) == 0  # 19 on time: the one from next year is not counted
        give(db, served[20:21], start=20)
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        first = db.training_jobs.find_one()
        assert first["trigger"]["watermark"] < future - timedelta(days=300)
        finish_as_worker(db, first)
        give(db, served[21:51], start=21)  # TRAIN_NEW_FEEDBACK = 30 after the first job's watermark
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 2, timeout=30)
