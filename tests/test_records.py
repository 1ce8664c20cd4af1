"""Typed records keep the stored shapes: statuses are stored as the same strings, facts once."""

from datetime import UTC, datetime

import bson
import pytest

from eduranker.pipeline.pairs import Pair, Snapshot
from eduranker.records import JobStatus, VersionStatus
from eduranker.store import jobs, versions


@pytest.mark.parametrize("status", [*JobStatus, *VersionStatus], ids=str)
def test_a_status_is_stored_and_read_back_as_its_plain_string(status):
    stored = bson.decode(bson.encode({"status": status, "in": {"$in": [status]}}))
    assert type(stored["status"]) is str and stored == {"status": status.value, "in": {"$in": [status.value]}}
    assert f"{status}" == status.value  # what logs, reasons and the CLI print


def test_the_statuses_are_the_strings_documents_already_hold():
    assert [s.value for s in JobStatus] == [
        "waiting",
        "queued",
        "running",
        "succeeded",
        "failed",
        "rejected",
        "cancelled",
    ]
    assert [s.value for s in VersionStatus] == ["candidate", "champion", "rejected", "retired", "rolled_back"]
    assert jobs.ACTIVE == ("queued", "running") and versions.ROLLED_BACK == "rolled_back"
    assert "queued" in jobs.ACTIVE and jobs.TERMINAL[-1] == "cancelled"  # a document's string finds its member


def _pair(i: int) -> Pair:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Pair(f"i{i}", f"q{i}", f"r{i}", f"query {i}", f"document {i}", float(i % 2), at)


def test_the_snapshot_hash_is_computed_once_per_pairs_list(monkeypatch):
    snapshot = Snapshot(pairs=[_pair(i) for i in range(4)])
    first = snapshot.content_hash
    computed = []
    monkeypatch.setattr("eduranker.pipeline.pairs.hashlib.sha256", lambda: computed.append(1))
    assert snapshot.summary()["content_hash"] == first and computed == []  # the second summary reuses it
    monkeypatch.undo()
    snapshot.pairs = snapshot.pairs[:3]
    assert snapshot.content_hash != first  # other pairs: hashed again
