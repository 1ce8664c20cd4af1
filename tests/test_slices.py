"""Each pair carries its resource's slice (SLICE_FIELD, `subject` by default), read by the snapshot."""

import pytest

from eduranker.pipeline.pairs import build_snapshot
from eduranker.store.snapshot import iter_feedback_rows


@pytest.mark.integration
@pytest.mark.parametrize("field", ["subject", "topic", ""])
def test_the_snapshot_reads_each_resources_slice(db, field):
    values = {"algebra": "algebra", 7: "7", None: None, "": None, "x" * 500: "x" * 100, True: None}
    for i, value in enumerate(values):
        qid = db.user_queries.insert_one({"query_text": f"query {i}"}).inserted_id
        resource = {"title": f"resource {i}"} | ({} if value is None else {field or "subject": value})
        rid = db.resources.insert_one(resource).inserted_id
        db.inferences.insert_one({"query_id": qid, "resource_id": rid, "feedback": "like"})
    snapshot = build_snapshot(iter_feedback_rows(db, 1000, slice_field=field), 1000)
    got = {p.query: p.slice for p in snapshot.pairs}
    expected = {f"query {i}": (want if field else None) for i, want in enumerate(values.values())}
    assert got == expected
