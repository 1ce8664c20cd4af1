# ruff: noqa: F811 - the fixture imported from tests/test_unattended.py is used as an argument
"""Registration is fenced by the run's attempt: a run paused just before registering, superseded
meanwhile, then resumed registers nothing, promotes nothing and leaves no version folder."""

from pathlib import Path

import pytest

from console import demo
from eduranker.store import jobs
from tests.test_unattended import superseded_while_stopped, usettings  # noqa: F401 - fixture


def _writing_its_version(job) -> bool:
    """Paused while it writes its version aside: the next thing it does is register."""
    return (job.get("progress") or {}).get("stage") == "write_artifacts"


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_paused_before_registration_and_superseded_registers_nothing_and_leaves_no_folder(
    db, usettings, tmp_path
):
    demo.seed_feedback(db, seed=5)
    jobs.create_job(db, "pause", trigger={"reason": "test"})
    successor, after_successor, resumed = superseded_while_stopped(db, usettings, "pause", _writing_its_version)
    assert resumed["status"] == "superseded"
    assert successor["status"] in ("succeeded", "rejected")
    job = jobs.get_job(db, "pause")
    assert job == after_successor  # the resumed run wrote nothing to the job
    assert [v["version"] for v in db.model_versions.find()] == [job["version"]]  # and registered nothing
    assert sorted(p.name for p in (Path(usettings.models_dir) / "versions").iterdir()) == [job["version"]]
    champion = db.champion.find_one({"_id": "current"}) or {}
    assert champion.get("version") in (None, job["version"])  # and promoted nothing
