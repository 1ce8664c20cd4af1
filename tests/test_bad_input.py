"""Garbage mixed into good data: every kind is skipped and counted, the job trains on the rest, memory stays flat."""

import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from console import demo
from eduranker.pipeline.pairs import SKIP_REASONS, build_snapshot
from eduranker.store import jobs
from eduranker.store.snapshot import iter_feedback_rows
from worker.job import run_training_job

T0 = datetime(2026, 5, 1, tzinfo=UTC)
MEGABYTES = 4


def plant_garbage(db) -> tuple[Counter, dict]:
    """Insert one document per malformed kind; returns the skip reasons expected and other expectations."""
    good_q = db.user_queries.insert_one({"query_text": "what is photosynthesis"}).inserted_id
    good_r = db.resources.insert_one({"title": "Photosynthesis", "description": "Light to sugar"}).inserted_id
    q = lambda text, **kw: db.user_queries.insert_one({"query_text": text, **kw}).inserted_id  # noqa: E731
    r = lambda **doc: db.resources.insert_one(doc).inserted_id  # noqa: E731
    big = "leaf " * (MEGABYTES * 1024 * 1024 // 5)

    # (query_id, resource_id, feedback, expected skip reason or None when the pair is kept)
    kinds = {
        "dangling query": (ObjectId(), good_r, "like", "missing_query"),
        "dangling resource": (good_q, ObjectId(), "like", "missing_resource"),
        "query id is a string": (str(good_q), good_r, "like", "invalid_query_id"),
        "query id is null": (None, good_r, "like", "invalid_query_id"),
        "resource id is a number": (good_q, 17, "like", "invalid_resource_id"),
        "resource id missing": (good_q, ..., "like", "invalid_resource_id"),
        "unknown feedback word": (good_q, good_r, "superb", "invalid_feedback"),
        "feedback in capitals": (good_q, good_r, "LIKE", "invalid_feedback"),
        "feedback is a number": (good_q, good_r, 1, "invalid_feedback"),
        "feedback is a boolean": (good_q, good_r, True, "invalid_feedback"),
        "feedback is an array": (good_q, good_r, ["like"], "invalid_feedback"),
        "query text is a number": (q(42), good_r, "like", "query_text_not_string"),
        "query text missing": (db.user_queries.insert_one({}).inserted_id, good_r, "like", "query_text_not_string"),
        "query text empty": (q(""), good_r, "dislike", "empty_query_text"),
        "query text whitespace": (q(" \t\n "), good_r, "like", "empty_query_text"),
        "query text control characters only": (q("\x00\x07\x1b"), good_r, "like", "empty_query_text"),
        "title is a list": (good_q, r(title=["x"]), "like", "title_not_string"),
        "title missing": (good_q, r(description="only a description"), "like", "title_not_string"),
        "title whitespace": (good_q, r(title="   ", description="text"), "like", "empty_title"),
        "description is an object": (good_q, r(title="t", description={"a": 1}), "like", "description_not_string"),
        "megabyte query text": (q(big), good_r, "like", None),
        "megabyte description": (good_q, r(title="Leaves", description=big), "dislike", None),
        "control characters inside text": (q("how\x00 do\x1b plants\u200b eat 🌱"), good_r, "like", None),
        "feedback_at is a string": (q("why is the sky blue"), good_r, "like", None),
    }
    expected = Counter()
    for name, (query_id, resource_id, feedback, reason) in kinds.items():
        doc = {"query_id": query_id, "resource_id": resource_id, "feedback": feedback, "feedback_at": T0}
        if resource_id is ...:
            del doc["resource_id"]
        if name == "feedback_at is a string":
            doc["feedback_at"] = "yesterday"
        db.inferences.insert_one(doc)
        if reason:
            expected[reason] += 1
    # Conflicting duplicates: the later reaction wins, the earlier is counted as superseded.
    dup_q = q("conflicting votes")
    db.inferences.insert_one({"query_id": dup_q, "resource_id": good_r, "feedback": "like", "feedback_at": T0})
    later = T0 + timedelta(hours=1)
    db.inferences.insert_one({"query_id": dup_q, "resource_id": good_r, "feedback": "dislike", "feedback_at": later})
    # A null feedback is no reaction at all: never read.
    db.inferences.insert_one({"query_id": good_q, "resource_id": good_r, "feedback": None})
    return expected, {"kept": 5, "superseded": 1, "truncated": 2}


@pytest.mark.integration
@pytest.mark.slow
def test_every_malformed_kind_is_skipped_and_counted_and_memory_stays_flat(db, settings):
    good = demo.seed_feedback(db, seed=11)
    expected, facts = plant_garbage(db)

    tracemalloc.start()
    try:
        snapshot = build_snapshot(iter_feedback_rows(db, settings.max_text_chars), settings.max_text_chars)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert Counter(snapshot.skipped) == expected
    # Every reason the cleaner can give was planted here: a new check without a malformed case fails.
    assert set(snapshot.skipped) == set(SKIP_REASONS)
    assert snapshot.duplicates_superseded == facts["superseded"]
    assert snapshot.texts_truncated == facts["truncated"]
    assert len(snapshot.pairs) == good + facts["kept"]
    assert max(len(p.query) + len(p.document) for p in snapshot.pairs) <= 2 * settings.max_text_chars + 2
    # Megabyte texts are cut by the server: the snapshot never holds one.
    assert peak < MEGABYTES * 1024 * 1024 / 2, peak

    jobs.create_job(db, "messy", trigger={"reason": "test"}, overrides={"num_epochs": 1})
    outcome = run_training_job(settings, "messy")
    job = jobs.get_job(db, "messy")
    assert outcome["status"] in ("succeeded", "rejected") and outcome["version"]
    assert job["snapshot"]["skipped"] == dict(sorted(expected.items()))
    assert job["snapshot"]["pairs"] == good + facts["kept"]
