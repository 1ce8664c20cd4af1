"""Store functions against a real MongoDB-protocol server."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from eduranker.errors import ChampionChanged, Refused, StaleCandidate, Superseded, UnknownVersion
from eduranker.pipeline.pairs import build_snapshot
from eduranker.store import ensure_indexes, jobs, versions
from eduranker.store.feedback import _window, count_labels, latest_feedback_at
from eduranker.store.lease import Lease
from eduranker.store.snapshot import iter_feedback_rows

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


@pytest.mark.integration
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


@pytest.mark.integration
def test_usable_feedback_counts_follow_updates_and_removals(db):
    seed_messy(db)
    assert count_labels(db) == {"like": 8, "dislike": 2}
    db.inferences.update_many({"feedback": "like"}, {"$set": {"feedback": "dislike"}})
    db.inferences.update_one({"feedback": "dislike"}, {"$unset": {"feedback": ""}})
    assert count_labels(db) == {"like": 0, "dislike": 9}
    assert count_labels(db, since=T0 + timedelta(minutes=1)) == {"like": 0, "dislike": 1}


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


@pytest.mark.integration
def test_feedback_windows_count_by_feedback_at_or_created_at_and_stop_at_the_cap(db):
    _feedback_window_rows(db)
    assert count_labels(db) == {"like": 3, "dislike": 2}
    assert count_labels(db, since=T0 + timedelta(minutes=15)) == {"like": 2, "dislike": 1}
    assert count_labels(db, since=T0 + timedelta(minutes=35)) == {"like": 1, "dislike": 0}
    capped = count_labels(db, since=T0, cap=2)
    assert sum(capped.values()) == 2
    assert count_labels(db, since=T0, cap=50) == {"like": 3, "dislike": 2}
    assert latest_feedback_at(db) == T0 + timedelta(minutes=40)
    assert latest_feedback_at(db, since=T0 + timedelta(minutes=35)) == T0 + timedelta(minutes=40)
    assert latest_feedback_at(db, since=T0 + timedelta(minutes=45)) is None


@pytest.mark.integration
def test_feedback_window_queries_are_index_ranges_not_collection_scans(db):
    _feedback_window_rows(db)
    for query in _window("like", T0) + _window("dislike", None):
        plan = str(db.inferences.find(query).explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "feedback_window" in plan, (query, plan)


def _register(db, version):
    versions.insert_version(db, {"version": version, "job_id": f"job-{version}"})


def _promote(db, version, **kw):
    return versions.record_promotion(db, version, by="test", reason="test", **kw)


@pytest.mark.integration
def test_the_database_refuses_a_second_champion_status(db):
    ensure_indexes(db)
    _register(db, "v0001")
    _register(db, "v0002")
    _promote(db, "v0001")
    with pytest.raises(DuplicateKeyError):
        db.model_versions.update_one({"version": "v0002"}, {"$set": {"status": "champion"}})


@pytest.mark.integration
def test_rollback_walks_back_through_the_champions_instead_of_swapping_two(db):
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003"):
        _register(db, v)
    assert _promote(db, "v0001") is None
    assert _promote(db, "v0002") == "v0001"
    assert _promote(db, "v0003") == "v0002"
    assert versions.get_champion(db)["version"] == "v0003"
    assert versions.record_rollback(db, by="test", reason="bad clicks") == ("v0003", "v0002")
    assert versions.record_rollback(db, by="test", reason="still bad") == ("v0002", "v0001")
    assert db.model_versions.count_documents({"status": "champion"}) == 1
    v3 = versions.get_version(db, "v0003")
    assert v3["status"] == "rolled_back" and v3["rollback_reason"] == "bad clicks"
    assert [h["status"] for h in v3["history"]] == ["candidate", "champion", "rolled_back"]
    with pytest.raises(Refused, match="no previous champion"):
        versions.record_rollback(db, by="test", reason="x")
    with pytest.raises(UnknownVersion):
        _promote(db, "v0099")


@pytest.mark.integration
def test_a_rejected_version_needs_force_and_keeps_that_it_was_forced(db):
    ensure_indexes(db)
    _register(db, "v0001")
    versions.set_status(db, "v0001", versions.REJECTED, by="job j", reason="gain within the noise")
    with pytest.raises(Refused, match="--force"):
        _promote(db, "v0001")
    assert versions.read_champion(db).version is None
    _promote(db, "v0001", force=True)
    v1 = versions.get_version(db, "v0001")
    assert v1["status"] == "champion" and v1["forced"] is True
    assert [(h["status"], h.get("forced")) for h in v1["history"]][-2:] == [("rejected", None), ("champion", True)]


@pytest.mark.integration
def test_a_candidate_judged_against_a_champion_that_changed_is_not_promoted(db):
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003"):
        _register(db, v)
    _promote(db, "v0001")
    _promote(db, "v0002")  # while a job judged v0003 against v0001
    with pytest.raises(StaleCandidate, match="from v0001 to v0002"):
        _promote(db, "v0003", expected_champion="v0001")
    assert versions.read_champion(db).version == "v0002"
    versions.record_rollback(db, by="test", reason="x")  # back to v0001: the same champion as judged against
    assert _promote(db, "v0003", expected_champion="v0001") == "v0001"


@pytest.mark.integration
def test_a_switch_from_a_stale_read_changes_nothing(db):
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003"):
        _register(db, v)
    _promote(db, "v0001")
    _promote(db, "v0002")
    seen = versions.read_champion(db)
    _promote(db, "v0003")
    with pytest.raises(ChampionChanged) as raised:
        versions.record_rollback(db, by="late operator", reason="x", seen=seen)
    assert not isinstance(raised.value, StaleCandidate)  # no candidate was judged: a rollback lost a race
    assert versions.read_champion(db).version == "v0003"


@pytest.mark.integration
def test_statuses_follow_the_record_after_a_crash_between_the_writes(db):
    ensure_indexes(db)
    for v in ("v0001", "v0002"):
        _register(db, v)
    _promote(db, "v0001")
    # As if killed right after the record switched to v0002, before any status moved.
    db.champion.update_one({"_id": "current"}, {"$set": {"version": "v0002", "chain": ["v0001", "v0002"]}})
    assert versions.sync_statuses(db) == ["v0001", "v0002"]
    assert versions.get_version(db, "v0001")["status"] == "retired"
    assert versions.get_version(db, "v0002")["status"] == "champion"
    assert versions.sync_statuses(db) == []


@pytest.mark.integration
def test_versions_increase(db):
    assert [versions.allocate_version(db) for _ in range(3)] == ["v0001", "v0002", "v0003"]


@pytest.mark.integration
def test_job_ids_are_unique_and_claims_count_attempts(db):
    ensure_indexes(db)
    assert jobs.create_job(db, "j1", trigger={"reason": "t"}) == "queued"
    assert jobs.create_job(db, "j1", trigger={"reason": "again"}) is None
    assert jobs.claim_job(db, "j1", worker="w", stale_after_s=60)["attempts"] == 1
    assert jobs.claim_job(db, "j1", worker="w2", stale_after_s=60) is None  # a live run is not taken over
    db.training_jobs.update_one({"_id": "j1"}, {"$set": {"heartbeat_at": T0}})
    assert jobs.claim_job(db, "j1", worker="w2", stale_after_s=60)["attempts"] == 2  # redelivered after its worker died
    jobs.finish_job(db, "j1", 2, jobs.SUCCEEDED)
    assert jobs.claim_job(db, "j1", worker="w", stale_after_s=60) is None


@pytest.mark.integration
def test_one_active_job_automatic_ones_are_refused_and_manual_ones_wait(db):
    ensure_indexes(db)
    assert jobs.create_job(db, "manual-1", trigger={}) == "queued"
    assert jobs.create_job(db, "auto-1", trigger={}, automatic=True) is None
    assert jobs.get_job(db, "auto-1") is None
    assert jobs.create_job(db, "manual-2", trigger={}) == "waiting"
    assert jobs.advance_waiting(db) is None  # the slot is taken
    claimed = jobs.claim_job(db, "manual-1", worker="w", stale_after_s=60)
    jobs.finish_job(db, "manual-1", claimed["attempts"], jobs.SUCCEEDED)
    assert jobs.advance_waiting(db) == "manual-2"
    assert jobs.get_job(db, "manual-2")["status"] == "queued"
    assert db.training_jobs.count_documents({"active": True}) == 1


@pytest.mark.integration
def test_a_superseded_run_changes_nothing(db):
    ensure_indexes(db)
    jobs.create_job(db, "j", trigger={})
    first = jobs.claim_job(db, "j", worker="old", stale_after_s=60)["attempts"]
    db.training_jobs.update_one({"_id": "j"}, {"$set": {"heartbeat_at": T0}})  # old run went silent
    second = jobs.claim_job(db, "j", worker="new", stale_after_s=60)["attempts"]
    before = jobs.get_job(db, "j")
    assert not jobs.heartbeat(db, "j", first)
    with pytest.raises(Superseded):
        jobs.update_job(db, "j", first, progress={"stage": "train"})
    with pytest.raises(Superseded):
        jobs.finish_job(db, "j", first, jobs.SUCCEEDED, version="v0009")
    assert not jobs.hand_back(db, "j", first, "stopping")
    assert jobs.get_job(db, "j") == before
    jobs.finish_job(db, "j", second, jobs.REJECTED)
    assert jobs.get_job(db, "j")["status"] == "rejected"


@pytest.mark.integration
def test_unclaimed_jobs_are_resent_then_failed_and_silent_runs_requeued(db):
    ensure_indexes(db)
    at = T0 + timedelta(hours=1)
    jobs.create_job(db, "lost", trigger={}, sent=True)
    db.training_jobs.update_one({"_id": "lost"}, {"$set": {"sent_at": T0}})
    assert jobs.resend_unclaimed(db, after_s=300, max_sends=2, at=at) == ["lost"]
    assert [j["_id"] for j in jobs.unsent_jobs(db)] == ["lost"]
    for sends in (2, 3):
        jobs.mark_sent(db, "lost")
        db.training_jobs.update_one({"_id": "lost"}, {"$set": {"sent_at": T0}})
        assert jobs.get_job(db, "lost")["sends"] == sends
        jobs.resend_unclaimed(db, after_s=300, max_sends=2, at=at)
    lost = jobs.get_job(db, "lost")
    assert lost["status"] == "failed" and "no worker claimed it" in lost["reason"] and "active" not in lost

    jobs.create_job(db, "silent", trigger={})
    attempt = jobs.claim_job(db, "silent", worker="w", stale_after_s=60)["attempts"]
    assert jobs.requeue_silent(db, silent_after_s=120) == []
    db.training_jobs.update_one({"_id": "silent"}, {"$set": {"heartbeat_at": T0}})
    assert jobs.requeue_silent(db, silent_after_s=120) == ["silent"]
    silent = jobs.get_job(db, "silent")
    assert silent["status"] == "queued" and silent["sent_at"] is None and "requeued" in silent["reason"]
    assert not jobs.heartbeat(db, "silent", attempt)  # the silent run, if it wakes, is fenced out


@pytest.mark.integration
def test_the_lease_has_one_holder_and_passes_on_only_after_expiry_or_release(db):
    a, b = Lease(db, "a", 1.0), Lease(db, "b", 1.0)
    assert a.acquire() and a.held()
    assert not b.acquire()
    time.sleep(1.1)  # a stalls past its lease
    assert not a.held()
    assert b.acquire() and not a.acquire()
    b.release()
    assert a.acquire()
