from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from eduranker.pipeline.pairs import build_snapshot, classify_row, clean_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(**changes):
    base = {
        "_id": ObjectId(),
        "query_id": ObjectId(),
        "resource_id": ObjectId(),
        "feedback": "like",
        "feedback_at": T0,
        "query_found": True,
        "resource_found": True,
        "query_text": "what is photosynthesis",
        "query_text_type": "string",
        "query_text_length": 22,
        "title": "Photosynthesis explained",
        "title_type": "string",
        "description": "How plants make sugar.",
        "description_type": "string",
        "document_length": 46,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"feedback": "love"}, "invalid_feedback"),
        ({"feedback": 1}, "invalid_feedback"),
        ({"feedback": True}, "invalid_feedback"),
        ({"query_id": "abc"}, "invalid_query_id"),
        ({"resource_id": 7}, "invalid_resource_id"),
        ({"query_found": False, "query_text": None, "query_text_type": "missing"}, "missing_query"),
        ({"resource_found": False}, "missing_resource"),
        ({"query_text": None, "query_text_type": "int"}, "query_text_not_string"),
        ({"title": None, "title_type": "array"}, "title_not_string"),
        ({"description": None, "description_type": "object"}, "description_not_string"),
        ({"query_text": "  \t\n "}, "empty_query_text"),
        ({"query_text": "\x00\x01\x02"}, "empty_query_text"),
        ({"title": "   "}, "empty_title"),
    ],
)
def test_malformed_rows_are_skipped_with_their_reason(changes, reason):
    pair, got, _ = classify_row(row(**changes), max_text_chars=100)
    assert pair is None
    assert got == reason


def test_good_row_becomes_a_labelled_pair_with_title_then_description():
    pair, reason, truncated = classify_row(row(feedback="dislike"), max_text_chars=100)
    assert reason is None and not truncated
    assert pair.label == 0.0
    assert pair.document == "Photosynthesis explained\n\nHow plants make sugar."


def test_missing_description_leaves_the_title_alone():
    pair, _, _ = classify_row(row(description=None, description_type="missing"), 100)
    assert pair.document == "Photosynthesis explained"


def test_long_texts_are_kept_but_counted_as_truncated():
    _, _, truncated = classify_row(row(query_text_length=5_000_000), max_text_chars=4000)
    assert truncated


def test_clean_text_removes_control_characters_and_surrogates():
    assert clean_text("a\x00b\u0085c\ud800d  e\n\n f") == "a b c d e\nf"


def test_duplicates_keep_the_latest_feedback():
    q, r = ObjectId(), ObjectId()
    rows = [
        row(query_id=q, resource_id=r, feedback="like", feedback_at=T0),
        row(query_id=q, resource_id=r, feedback="dislike", feedback_at=T0 + timedelta(minutes=5)),
        row(query_id=q, resource_id=r, feedback="like", feedback_at=T0 + timedelta(minutes=1)),
    ]
    snap = build_snapshot(rows, 100)
    assert [p.label for p in snap.pairs] == [0.0]
    assert snap.duplicates_superseded == 2


def test_same_query_text_under_different_ids_is_one_pair():
    r = ObjectId()
    rows = [row(resource_id=r, query_text="What is  Photosynthesis"), row(resource_id=r, feedback="dislike")]
    assert len(build_snapshot(rows, 100).pairs) == 1


def test_snapshot_counts_hash_and_watermark():
    rows = [row(feedback_at=T0 + timedelta(seconds=i), query_text=f"q{i}") for i in range(3)]
    rows += [row(feedback="meh"), row(resource_found=False)]
    snap = build_snapshot(rows, 100)
    assert snap.rows_seen == 5
    assert dict(snap.skipped) == {"invalid_feedback": 1, "missing_resource": 1}
    assert snap.watermark == T0 + timedelta(seconds=2)
    assert snap.content_hash == build_snapshot(list(reversed(rows)), 100).content_hash


def test_feedback_dated_in_the_future_counts_as_given_now():
    from datetime import UTC, datetime, timedelta

    from bson import ObjectId

    from eduranker.pipeline.pairs import build_snapshot

    now = datetime(2026, 6, 1, tzinfo=UTC)
    row = {
        "_id": ObjectId(), "query_id": ObjectId(), "resource_id": ObjectId(), "feedback": "like",
        "feedback_at": now + timedelta(days=365), "query_found": True, "resource_found": True,
        "query_text": "q", "query_text_type": "string", "title": "t", "title_type": "string",
        "description_type": "missing",
    }  # fmt: skip
    snapshot = build_snapshot([row], 100, now=now)
    assert snapshot.watermark == now
