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
    assert [s.value for s in VersionStatus] == [
        "candidate", "champion", "rejected", "retired", "rolled_back", "challenger"
    ]  # fmt: skip
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


def test_a_read_version_may_lack_every_field_but_its_name_and_declares_each_registered_one():
    from typing import Required, get_origin, get_type_hints

    from eduranker.records import RegisteredVersion, VersionDoc

    registered, read = get_type_hints(RegisteredVersion), get_type_hints(VersionDoc)
    assert {k: read[k] for k in registered} == registered  # the same fields, with the same types
    with_extras = get_type_hints(VersionDoc, include_extras=True)
    assert [k for k, hint in with_extras.items() if get_origin(hint) is Required] == ["version"]
    assert VersionDoc.__total__ is False


@pytest.mark.integration
def test_a_version_registered_by_an_older_release_is_listed_and_shown(db, settings, capsys):
    """Only its name, job, status and times: what the first releases wrote, before metrics and gate."""
    from console import cli

    db.model_versions.insert_one({"version": "v0001", "job_id": "job-1", "status": "rejected",
                                  "created_at": datetime(2025, 1, 1, tzinfo=UTC)})  # fmt: skip
    assert [v["version"] for v in versions.list_versions(db)] == ["v0001"]
    assert cli.main(["versions"], settings) == 0
    assert "v0001" in capsys.readouterr().out
