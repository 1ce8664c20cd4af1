# ruff: noqa: F811 - the fixtures imported from tests/test_producer.py are used as arguments
"""Ordinary faults are contained: the producer keeps leading, its other duties go on, and
`eduranker status` says what failed. Also: index conflicts resolved by key pattern, future-dated
feedback that triggers once and never again, and the hand-back cap. Real SecantusDB and redis-server."""

from dataclasses import replace
from datetime import timedelta

import pytest
from pymongo import ASCENDING, DESCENDING

from eduranker import cli
from eduranker.store import ensure_indexes, jobs
from eduranker.store.clock import server_now
from eduranker.store.feedback import count_future_dated
from eduranker.store.online import ensure_online_indexes
from producer.state import load_state
from tests.test_producer import (  # noqa: F401 - fixtures
    ThreadedProducer,
    finish_as_worker,
    give,
    psettings,
    queue,
    served,
    wait_for,
)


def duty(db, name):
    return (load_state(db).get("duties") or {}).get(name) or {}


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_record_naming_a_missing_version_fails_one_duty_and_the_producer_goes_on(
    db,
    psettings,
    queue,
    served,
    capsys,
):
    # The registry document of the champion is gone (deleted by hand, a restore from an older backup).
    db.champion.insert_one({"_id": "current", "version": "v0042", "chain": ["v0042"], "seq": 1})
    s = replace(psettings, online_refresh_seconds=1)
    with ThreadedProducer(s) as producer:
        assert wait_for(lambda: duty(db, "online").get("failures", 0) >= 2)
        assert "v0042" in duty(db, "online")["last_error"]
        runs = duty(db, "requeue").get("runs", 0)
        assert wait_for(lambda: duty(db, "requeue").get("runs", 0) > runs)  # housekeeping goes on
        assert duty(db, "requeue")["failures"] == 0 and duty(db, "send")["failures"] == 0
        give(db, served[:25])  # and it still leads and acts: the first crossing is enqueued
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        assert producer.lease.held()
        assert cli.main(["status"], s) == 0
    out = capsys.readouterr().out
    assert "housekeeping: " in out and "online: FAILING" in out and "v0042" in out, out


@pytest.mark.integration
def test_indexes_that_exist_with_the_trainers_key_patterns_under_other_names_are_used_as_they_are(db, settings):
    db.inferences.create_index([("feedback", ASCENDING), ("feedback_at", ASCENDING), ("created_at", ASCENDING)],
                               name="api_feedback_idx")  # fmt: skip
    db.inferences.create_index([("model_version", ASCENDING), ("created_at", ASCENDING)], name="api_by_version")
    db.training_jobs.create_index([("status", ASCENDING), ("created_at", DESCENDING)], name="ops_status")
    ensure_indexes(db)  # no IndexOptionsConflict (code 85): the producer starts, a worker claims
    ensure_online_indexes(db)
    names = set(db.inferences.index_information())
    assert {"api_feedback_idx", "api_by_version"} <= names and "feedback_window" not in names
    jobs.create_job(db, "manual-1", trigger={"reason": "t", "source": "test"})
    from worker.job import claim

    assert claim(db, settings, "manual-1", "w1")["attempts"] == 1


@pytest.mark.integration
def test_an_index_with_the_trainers_keys_but_weaker_guarantees_does_not_stand_in_for_its_index(db):
    db.training_jobs.create_index("active", name="plain_active")  # not unique: one active job not enforced
    ensure_indexes(db)
    assert "one_active_job" in db.training_jobs.index_information()
    jobs.create_job(db, "manual-a", trigger={"reason": "t", "source": "test"})
    assert jobs.create_job(db, "auto-b", trigger={"reason": "t", "source": "test"}, automatic=True) is None


@pytest.mark.integration
@pytest.mark.slow
def test_120_feedbacks_dated_a_day_ahead_give_one_job_then_none_without_new_feedback(
    db,
    psettings,
    queue,
    served,
):
    ahead = server_now(db) + timedelta(days=1)
    for i, (inference_id, value) in enumerate(served[25:145]):  # an API host one day ahead
        dated = {"feedback": value, "feedback_at": ahead + timedelta(seconds=i)}
        db.inferences.update_one({"_id": inference_id}, {"$set": dated})
    with ThreadedProducer(psettings):
        give(db, served[:25])  # the first crossing (TRAIN_MIN_FEEDBACK 20), on time
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        first = db.training_jobs.find_one()
        assert first["trigger"]["watermark"] <= server_now(db)
        finish_as_worker(db, first)
        # Twenty evaluations after the job ended: the 120 (far above TRAIN_NEW_FEEDBACK, 30) never count.
        seen = load_state(db).get("evaluations", 0)
        assert wait_for(lambda: load_state(db).get("evaluations", 0) >= seen + 20, timeout=60)
        assert db.training_jobs.count_documents({}) == 1
        assert "0/30" in load_state(db)["last_decision"], load_state(db)["last_decision"]
    assert count_future_dated(db, server_now(db)) == 120  # what `eduranker status` reports


@pytest.mark.integration
def test_a_job_handed_back_at_the_cap_fails_with_the_count_and_the_last_reason(db):
    jobs.create_job(db, "manual-h", trigger={"reason": "t", "source": "test"})
    for _ in range(3):
        attempt = jobs.claim_job(db, "manual-h", worker="w", stale_after_s=60)["attempts"]
        assert jobs.hand_back(db, "manual-h", attempt, "will retry: timed out", max_handbacks=3) == jobs.QUEUED
    attempt = jobs.claim_job(db, "manual-h", worker="w", stale_after_s=60)["attempts"]
    assert jobs.hand_back(db, "manual-h", attempt, "will retry: timed out", max_handbacks=3) == jobs.FAILED
    job = jobs.get_job(db, "manual-h")
    assert job["status"] == jobs.FAILED and "active" not in job
    assert job["reason"] == "handed back 3 times (JOB_MAX_HANDBACKS 3); last: will retry: timed out"
    assert jobs.hand_back(db, "manual-h", attempt, "again", max_handbacks=3) is None  # ended: fenced out
