"""Feedback dated after the snapshot's now (the server's): taken as now and counted."""

from datetime import UTC, datetime, timedelta

from bson import ObjectId

from eduranker.pipeline.pairs import build_snapshot

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def row(at, title):
    return {
        "_id": ObjectId(), "query_id": ObjectId(), "resource_id": ObjectId(), "feedback": "like",
        "feedback_at": at, "query_found": True, "resource_found": True, "query_text": "q",
        "query_text_type": "string", "title": title, "title_type": "string", "description_type": "missing",
    }  # fmt: skip


def test_future_dated_pairs_are_counted_and_taken_as_given_at_the_snapshots_now():
    rows = [row(NOW + timedelta(days=1), "a"), row(NOW + timedelta(seconds=1), "b"), row(NOW, "c"),
            row(NOW - timedelta(hours=1), "d")]  # fmt: skip
    snapshot = build_snapshot(rows, 100, now=NOW)
    assert snapshot.future_dated == 2  # exactly now is not in the future
    assert snapshot.summary()["future_dated"] == 2
    assert snapshot.watermark == NOW
    assert sorted(p.feedback_at for p in snapshot.pairs)[-3:] == [NOW, NOW, NOW]


def test_a_snapshot_without_future_dated_feedback_counts_none():
    assert build_snapshot([row(NOW - timedelta(days=1), "a")], 100, now=NOW).future_dated == 0
