"""Waiting jobs: a bounded queue, overrides checked when a job is recorded, no freeze of retention, and a
waiting job that starts when the slot frees with a worker and no producer (docs/manual-jobs.md)."""

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
import redis

from eduranker.errors import Refused
from eduranker.store import ensure_indexes, jobs
from tests.celery_worker import start_worker, stop_worker, wait_for_job
from worker.manual import record_manual_job


@pytest.mark.integration
def test_at_most_max_waiting_jobs_wait_however_many_ask_at_once(db, settings):
    ensure_indexes(db)
    s = settings.with_overrides(max_waiting_jobs=3)
    assert record_manual_job(db, "holder", {}, "test", settings=s) == "queued"
    outcomes: list[object] = []
    start = threading.Barrier(8)

    def ask(i: int) -> None:
        start.wait()
        try:
            outcomes.append(record_manual_job(db, f"manual-{i}", {"num_epochs": 1}, "test", settings=s))
        except Refused as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes)).count("waiting") == 3, outcomes
    assert sum("3 manual jobs wait already (MAX_WAITING_JOBS)" in str(o) for o in outcomes) == 5, outcomes
    assert jobs.count_jobs(db, {"status": "waiting"}) == 3
    # A slot frees as a waiting job moves in: one more may wait.
    jobs.cancel_job(db, "holder", "done")
    assert jobs.advance_waiting(db) is not None
    assert record_manual_job(db, "manual-late", {}, "test", settings=s) == "waiting"


@pytest.mark.integration
def test_a_bad_override_is_refused_when_the_job_is_asked_for_and_nothing_is_recorded(db, settings, capsys):
    from console import cli

    ensure_indexes(db)
    with pytest.raises(Refused, match="job override num_epochs=10000: must be between 1 and 50"):
        record_manual_job(db, "manual-bad", {"num_epochs": 10000}, "test", settings=settings)
    assert cli.main(["train", "--epochs", "10000"], settings) == 1
    assert "error: job override num_epochs=10000" in capsys.readouterr().err
    assert jobs.count_jobs(db, {}) == 0


@pytest.mark.integration
def test_a_waiting_job_protects_no_folder_until_it_takes_the_slot(db, settings):
    from eduranker.pruning import prune
    from eduranker.store.clock import server_now
    from tests.test_retention import _folders, _register

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    assert jobs.create_job(db, "holder", trigger={}) == "queued"
    assert jobs.create_job(db, "waiter", trigger={}) == "waiting"
    jobs.cancel_job(db, "holder", "done")  # the waiter stays waiting (nobody moved it yet)
    for i in range(1, 5):
        _register(db, s, i, promote=True)  # v0001 and v0002 retired after the waiter was recorded
    assert prune(db, s, now=server_now(db) + timedelta(seconds=1)).pruned == ["v0001", "v0002"]
    assert jobs.advance_waiting(db) == "waiter"  # it takes the slot: what retires from now on is protected
    for i in range(5, 8):
        _register(db, s, i, promote=True)  # v0004, v0005 and v0006 retired while the waiter holds the slot
    _register(db, s, 8, promote=False)
    assert prune(db, s, now=server_now(db) + timedelta(seconds=1)).pruned == ["v0003"]  # retired before
    assert {"v0004", "v0005"} <= _folders(s)


@pytest.mark.integration
def test_a_waiting_job_starts_when_the_slot_frees_with_a_worker_and_no_producer(db, settings, redis_url, tmp_path):
    from eduranker.queue import make_celery, send_with_retry

    s = replace(settings, celery_broker_url=f"{redis_url}/4", celery_result_backend=f"{redis_url}/5")
    for url in (s.celery_broker_url, s.celery_result_backend):
        redis.Redis.from_url(url).flushdb()
    ensure_indexes(db)
    # Training by hand: one job in the slot, one waiting behind it; no producer anywhere.
    assert jobs.create_job(db, "manual-first", trigger={"reason": "by hand"}) == "queued"
    assert jobs.create_job(db, "manual-second", trigger={"reason": "by hand"}) == "waiting"
    assert send_with_retry(make_celery(s), db, "manual-first")
    worker = start_worker(s, tmp_path / "worker.log")
    try:
        # No feedback: each job fails at its snapshot, which frees the slot at once.
        first = wait_for_job(db, "manual-first", lambda j: j["status"] in jobs.TERMINAL, 300)
        second = wait_for_job(db, "manual-second", lambda j: j["status"] in jobs.TERMINAL, 300)
    finally:
        stop_worker(worker)
    assert first["reason"].startswith("not enough feedback"), first
    assert second["status"] == "failed" and second["reason"].startswith("not enough feedback"), second
    assert second["sends"] == 1 and second["attempts"] == 1
    assert "job manual-second moved into the freed slot and sent" in (tmp_path / "worker.log").read_text()
