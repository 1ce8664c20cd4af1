"""Store functions against a real MongoDB-protocol server."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from eduranker.errors import UnknownVersion
from eduranker.store import ensure_indexes, jobs, versions
from eduranker.store.feedback import _window, count_usable_feedback, latest_feedback_at
from eduranker.store.snapshot import iter_feedback_rows
from worker.pairs import build_snapshot

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def seed_messy(db):
    q_ok = db.user_queries.insert_one({"query_text": "what is photosynthesis"}).inserted_id
    q_empty = db.user_queries.insert_one({"query_text": "   "}).inserted_id
    q_number = db.user_queries.insert_one({"query_text": 42}).inserted_id
    q_huge = db.user_queries.insert_one({"query_text": "plants " * 300_000}).inserted_id  # ~2 MB
    r_ok = db.resources.insert_one({"title": "Photosynthesis", "description": "Light to sugar"}).inserted_id
    r_no_desc = db.resources.insert_one({"title": "Leaves"}).inserted_id
    r_bad_title = db.resources.insert_one({"title": ["x"]}).inserted_id

    def inf(q, r, fb="like", **kw):
        return {"query_id": q, "resource_id": r, "feedback": fb, "feedback_at": T0, "created_at": T0, **kw}

    db.inferences.insert_many(
        [
            inf(q_ok, r_ok),
            inf(q_ok, r_no_desc, "dislike"),
            inf(q_huge, r_ok),
            inf(q_ok, r_ok, "dislike", feedback_at=T0 + timedelta(hours=1)),  # newer duplicate wins
            inf(q_empty, r_ok),
            inf(q_number, r_ok),
            inf(ObjectId(), r_ok),  # dangling query
            inf(q_ok, ObjectId()),  # dangling resource
            inf("not-an-id", r_ok),
            inf(q_ok, r_bad_title),
            inf(q_ok, r_ok, "superb"),
            inf(q_ok, r_ok, 1),
            {"query_id": q_ok, "resource_id": r_ok, "created_at": T0},  # no feedback: not read at all
            inf(q_ok, r_ok, None),
        ]
    )


def test_snapshot_joins_and_skips_malformed_documents_by_reason(db):
    seed_messy(db)
    snap = build_snapshot(iter_feedback_rows(db, max_text_chars=1000), max_text_chars=1000)
    assert dict(snap.skipped) == {
        "empty_query_text": 1,
        "query_text_not_string": 1,
        "missing_query": 1,
        "missing_resource": 1,
        "invalid_query_id": 1,
        "title_not_string": 1,
        "invalid_feedback": 2,
    }
    assert snap.rows_seen == 12
    assert snap.duplicates_superseded == 1
    assert snap.texts_truncated == 1
    by_doc = {(p.query, p.document): p.label for p in snap.pairs}
    assert by_doc[("what is photosynthesis", "Photosynthesis\n\nLight to sugar")] == 0.0
    assert by_doc[("what is photosynthesis", "Leaves")] == 0.0
    huge = [p for p in snap.pairs if p.query.startswith("plants")]
    assert len(huge) == 1 and len(huge[0].query) <= 1000


def test_usable_feedback_counts_follow_updates_and_removals(db):
    seed_messy(db)
    assert count_usable_feedback(db) == {"like": 8, "dislike": 2}
    db.inferences.update_many({"feedback": "like"}, {"$set": {"feedback": "dislike"}})
    db.inferences.update_one({"feedback": "dislike"}, {"$unset": {"feedback": ""}})
    assert count_usable_feedback(db) == {"like": 0, "dislike": 9}
    assert count_usable_feedback(db, since=T0 + timedelta(minutes=1)) == {"like": 0, "dislike": 1}


def _feedback_window_rows(db):
    ensure_indexes(db)
    rows = [
        # (feedback, feedback_at, created_at) in minutes after T0
        ("like", 10, 0),
        ("dislike", 20, 1),
        ("like", 30, 2),
        ("like", None, 40),  # an insert that carried its feedback: created_at is when it was set
        ("dislike", None, 5),
        ("meh", 50, 3),  # malformed: never counted
        (None, None, 60),  # served, no reaction
    ]
    minutes = lambda m: None if m is None else T0 + timedelta(minutes=m)  # noqa: E731
    for feedback, at, created in rows:
        doc = {"query_id": ObjectId(), "resource_id": ObjectId(), "created_at": minutes(created)}
        if feedback is not None:
            doc["feedback"] = feedback
        if at is not None:
            doc["feedback_at"] = minutes(at)
        db.inferences.insert_one(doc)


def test_feedback_windows_count_by_feedback_at_or_created_at_and_stop_at_the_cap(db):
    _feedback_window_rows(db)
    assert count_usable_feedback(db) == {"like": 3, "dislike": 2}
    assert count_usable_feedback(db, since=T0 + timedelta(minutes=15)) == {"like": 2, "dislike": 1}
    assert count_usable_feedback(db, since=T0 + timedelta(minutes=35)) == {"like": 1, "dislike": 0}
    capped = count_usable_feedback(db, since=T0, cap=2)
    assert sum(capped.values()) == 2
    assert count_usable_feedback(db, since=T0, cap=50) == {"like": 3, "dislike": 2}
    assert latest_feedback_at(db) == T0 + timedelta(minutes=40)
    assert latest_feedback_at(db, since=T0 + timedelta(minutes=35)) == T0 + timedelta(minutes=40)
    assert latest_feedback_at(db, since=T0 + timedelta(minutes=45)) is None


def test_feedback_window_queries_are_index_ranges_not_collection_scans(db):
    _feedback_window_rows(db)
    for query in _window("like", T0) + _window("dislike", None):
        plan = str(db.inferences.find(query).explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "feedback_window" in plan, (query, plan)


def _register(db, version):
    versions.insert_version(db, {"version": version, "job_id": f"job-{version}"})


def test_the_database_refuses_a_second_champion(db):
    ensure_indexes(db)
    _register(db, "v0001")
    _register(db, "v0002")
    versions.set_status(db, "v0001", versions.CHAMPION)
    with pytest.raises(DuplicateKeyError):
        versions.set_status(db, "v0002", versions.CHAMPION)


def test_promote_and_rollback_keep_one_champion(db):
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003"):
        _register(db, v)
    assert versions.promote(db, "v0001") is None
    assert versions.promote(db, "v0002") == "v0001"
    assert versions.promote(db, "v0003") == "v0002"
    assert versions.get_champion(db)["version"] == "v0003"
    assert versions.rollback(db) == ("v0003", "v0002")
    assert versions.rollback(db) == ("v0002", "v0001")
    assert db.model_versions.count_documents({"status": "champion"}) == 1
    with pytest.raises(UnknownVersion, match="no previous champion"):
        versions.rollback(db)
    with pytest.raises(UnknownVersion):
        versions.promote(db, "v0099")


def test_versions_increase(db):
    assert [versions.allocate_version(db) for _ in range(3)] == ["v0001", "v0002", "v0003"]


def test_job_ids_are_unique_and_claims_count_attempts(db):
    assert jobs.create_job(db, "j1", trigger={"reason": "t"})
    assert not jobs.create_job(db, "j1", trigger={"reason": "again"})
    assert jobs.claim_job(db, "j1", worker="w", stale_after_s=60)["attempts"] == 1
    assert jobs.claim_job(db, "j1", worker="w2", stale_after_s=60) is None  # a live run is not taken over
    db.training_jobs.update_one({"_id": "j1"}, {"$set": {"heartbeat_at": T0}})
    assert jobs.claim_job(db, "j1", worker="w2", stale_after_s=60)["attempts"] == 2  # redelivered after its worker died
    jobs.finish_job(db, "j1", jobs.SUCCEEDED)
    assert jobs.claim_job(db, "j1", worker="w", stale_after_s=60) is None


def test_reaper_marks_silent_running_jobs_failed(db):
    jobs.create_job(db, "old", trigger={})
    jobs.create_job(db, "fresh", trigger={})
    jobs.claim_job(db, "old", worker="w", stale_after_s=60)
    jobs.claim_job(db, "fresh", worker="w", stale_after_s=60)
    db.training_jobs.update_one({"_id": "old"}, {"$set": {"heartbeat_at": T0}})
    assert jobs.reap_dead_jobs(db, dead_after_s=60) == ["old"]
    old = jobs.get_job(db, "old")
    assert old["status"] == "failed" and "silent" in old["reason"]
    assert jobs.get_job(db, "fresh")["status"] == "running"
