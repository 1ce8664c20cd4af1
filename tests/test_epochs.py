"""Evaluation epochs are checked, not trusted: versions record their key's fingerprint, a lost or changed
epoch stops jobs with one reason, and an operator starts a new epoch on purpose (docs/gate.md)."""

import pytest

from eduranker.pipeline.split import SplitKey
from eduranker.store import evaluation_epochs as epochs

KEY, OTHER = "ab" * 32, "cd" * 32
FP, FP_OTHER = SplitKey(1, KEY, 0.2).fingerprint, SplitKey(1, OTHER, 0.2).fingerprint  # what versions record


def test_the_stored_fingerprint_is_the_one_versions_record():
    assert epochs.key_fingerprint(KEY) == FP and FP != FP_OTHER


@pytest.mark.parametrize(
    ("recorded", "stored", "restarted_at", "problem"),
    [
        ({}, {}, 0, None),  # a fresh registry
        ({1: {FP}}, {1: FP}, 0, None),
        ({1: {FP}, 2: {FP_OTHER}}, {1: FP, 2: FP_OTHER}, 0, None),
        ({1: {FP}}, {}, 0, "epoch 1 is missing"),  # evaluation_epochs lost
        ({1: {FP}}, {1: FP_OTHER}, 0, f"epoch 1 holds key {FP_OTHER} where versions recorded {FP}"),  # re-created
        ({1: {FP}, 2: {FP}}, {1: FP}, 0, "epoch 2 is missing"),
        # An operator started epoch 3 on purpose: what came before it is accepted (judged as unknown).
        ({1: {FP}, 2: {FP}}, {3: FP_OTHER}, 3, None),
        ({1: {FP}, 3: {FP_OTHER}, 4: {FP}}, {3: FP_OTHER}, 3, "epoch 4 is missing"),
    ],
)  # fmt: skip
def test_which_epochs_stop_jobs(recorded, stored, restarted_at, problem):
    found = epochs.epoch_problem(recorded, stored, restarted_at)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "eduranker new-epoch" in found


def _version(db, version: str, epoch: int, fingerprint: str, lineage: list[int]) -> None:
    from eduranker.store import versions

    split = {"epoch": epoch, "test_fraction": 0.2, "key_fingerprint": fingerprint, "lineage": lineage}
    versions.insert_version(db, {"version": version, "job_id": f"job-{version}", "artifact_path": "x", "split": split})


def _run(db, settings, job_id: str) -> dict:
    from eduranker.errors import PermanentError
    from eduranker.store import jobs
    from worker.job import run_training_job

    jobs.create_job(db, job_id, trigger={"reason": "test"})
    with pytest.raises(PermanentError):
        run_training_job(settings, job_id, db=db)
    return jobs.get_job(db, job_id)


@pytest.mark.integration
def test_a_lost_or_recreated_epoch_stops_jobs_until_an_operator_starts_a_new_one(db, settings, capsys):
    from console import cli
    from eduranker.store import ensure_indexes
    from worker.stages import lineage_of

    ensure_indexes(db)
    s = settings.with_overrides(split_key="")
    _version(db, "v0001", 1, FP, [1])
    _version(db, "v0002", 1, FP, [1])
    # evaluation_epochs is empty: restored without it. The job stops before reading anything, and
    # creates no epoch 1 with a new key.
    job = _run(db, s, "after-restore")
    assert job["status"] == "failed" and job["reason"].startswith("evaluation epochs do not match the registry")
    assert "epoch 1 is missing" in job["reason"] and "eduranker new-epoch" in job["reason"]
    assert epochs.latest_epoch(db) is None and "attempts" in job and job["attempts"] == 1
    # Epoch 1 re-created with another key (what a job did before the check): the fingerprint differs.
    db[epochs.EVALUATION_EPOCHS].insert_one({"_id": 1, "key": OTHER, "test_fraction": 0.2, "started_by": "job x"})
    job = _run(db, s, "after-recreate")
    assert f"epoch 1 holds key {FP_OTHER} where versions recorded {FP}" in job["reason"]
    assert lineage_of(db, "v0001") == [None]  # the gate treats what v0001 trained on as unknown

    assert cli.main(["new-epoch", "--reason", "restored without evaluation_epochs"], s) == 0
    assert "evaluation epoch 2 started" in capsys.readouterr().out
    started = epochs.latest_epoch(db)
    assert started is not None and started.epoch == 2 and started.on_purpose and started.key != OTHER
    assert epochs.check_epochs(db) is None
    job = _run(db, s, "new-epoch")  # past the check: it reads the (empty) feedback and stops there
    assert job["reason"].startswith("not enough feedback"), job["reason"]
    assert cli.main(["new-epoch"], s) == 1  # nothing to repair: refused without --force
    assert "a new epoch is not needed" in capsys.readouterr().err
