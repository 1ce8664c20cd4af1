"""Training jobs end to end without Celery: real MongoDB protocol server, real tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bson import ObjectId

from console import demo
from eduranker.errors import JobRefused, PermanentError
from eduranker.store import jobs, versions
from tests.trained_image import restore
from worker.job import run_training_job


def _seed_pairs(db, n_queries, labels):
    """`n_queries` queries, each judged on every label in `labels` against its own resource."""
    for q in range(n_queries):
        qid = db.user_queries.insert_one({"query_text": f"question number {q}"}).inserted_id
        for i, label in enumerate(labels):
            rid = db.resources.insert_one({"title": f"resource {q}-{i}"}).inserted_id
            db.inferences.insert_one({"query_id": qid, "resource_id": rid, "feedback": label})


@pytest.mark.integration
@pytest.mark.parametrize(
    "n_queries,labels,message",
    [
        (3, ["like", "dislike"], "not enough feedback: 6 usable pairs, need 10"),
        (6, ["like", "like"], "only one class: all 12 usable pairs are 'like'"),
        # One query is wholly on one side of the stable split: never enough held out to judge.
        (1, ["like", "dislike"] * 6, "held-out set too small to decide: "),
    ],
)
def test_impossible_jobs_fail_with_a_reason_and_register_nothing(db, settings, n_queries, labels, message):
    _seed_pairs(db, n_queries, labels)
    db.inferences.insert_one({"query_id": ObjectId(), "resource_id": ObjectId(), "feedback": "like"})
    jobs.create_job(db, "refuse", trigger={"reason": "test"})
    with pytest.raises(JobRefused):
        run_training_job(settings, "refuse")
    job = jobs.get_job(db, "refuse")
    assert job["status"] == "failed"
    assert message in job["reason"]
    assert job["snapshot"]["skipped"] == {"missing_query": 1}
    assert db.model_versions.count_documents({}) == 0
    assert not (Path(settings.models_dir) / "versions").exists()


@pytest.mark.integration
def test_unknown_overrides_fail_the_job(db, settings):
    jobs.create_job(db, "bad", trigger={}, overrides={"num_epochs": 0})
    with pytest.raises(PermanentError, match="job override num_epochs=0: must be between 1 and 50"):
        run_training_job(settings, "bad")
    assert jobs.get_job(db, "bad")["status"] == "failed"


@pytest.fixture()
def trained(db, settings, trained_demo):
    """The demo feedback (seed 1) and job-1 trained on it: a copy of the session's one training run."""
    restore(trained_demo, db, settings.models_dir)
    return trained_demo.outcome, list(trained_demo.stages)


@pytest.mark.integration
@pytest.mark.slow
def test_a_job_registers_a_champion_with_metrics_artifacts_and_progress(db, settings, trained):
    outcome, stages = trained
    assert outcome["status"] == "succeeded" and outcome["promoted"]
    version = versions.get_version(db, outcome["version"])
    assert version["status"] == "champion"
    for side in ("before", "after"):
        assert set(version["metrics"][side]) >= {
            "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "ndcg@10", "mrr"
        }  # fmt: skip
    assert version["metrics"]["after"]["roc_auc"] > version["metrics"]["before"]["roc_auc"]
    assert version["snapshot"]["pairs"] == 288

    folder = Path(settings.models_dir) / version["artifact_path"]
    names = {p.name for p in folder.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "training_metadata.json",
        "training_report.txt",
        "heldout_pairs.jsonl",
    } <= names
    assert {"roc_curve.png", "confusion_matrix.png", "label_distribution.png"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)
    meta = json.loads((folder / "training_metadata.json").read_text())
    assert meta["metrics"]["after"]["roc_auc"] == pytest.approx(version["metrics"]["after"]["roc_auc"])
    assert meta["metrics"]["after"]["confusion_matrix"] == version["metrics"]["after"]["confusion_matrix"]
    report = (folder / "training_report.txt").read_text()
    assert "roc_auc" in report and "95% CI" in report and "Gate evidence" in report
    assert (Path(settings.models_dir) / "champion").resolve() == folder.resolve()

    names = [s for s, _ in stages]
    assert names[:3] == ["snapshot", "evaluate_before", "train"] and names[-1] == "write_artifacts"
    interval = version["gate"]["intervals"]["roc_auc"]
    assert interval["low"] > settings.min_improvement and interval["confidence"] == settings.gate_confidence
    assert "lower bound clears" in version["gate_reason"]
    assert [h["status"] for h in version["history"]] == ["candidate", "champion"]
    last_train = [d for s, d in stages if s == "train"][-1]
    assert last_train["step"] == last_train["total_steps"] > 0

    job = jobs.get_job(db, "job-1")
    assert job["status"] == "succeeded" and job["version"] == outcome["version"]
    assert job["device"].startswith("cpu") and job["attempts"] == 1
    assert job["snapshot"]["content_hash"] and job["snapshot"]["watermark"]


@pytest.mark.integration
@pytest.mark.slow
def test_the_champion_path_loads_in_a_fresh_process(settings, trained):
    code = (
        "import sys; from sentence_transformers import CrossEncoder;"
        "m = CrossEncoder(sys.argv[1]);"
        "s = m.predict([('how do plants make food', 'Photosynthesis explained'),"
        " ('how do plants make food', 'Steam engines and factories')]);"
        "print(float(s[0]), float(s[1]))"
    )
    champion = str(Path(settings.models_dir) / "champion")
    out = subprocess.run([sys.executable, "-c", code, champion], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    relevant, irrelevant = map(float, out.stdout.split())
    assert 0.0 <= irrelevant < relevant <= 1.0


@pytest.mark.integration
@pytest.mark.slow
def test_a_second_job_is_compared_with_the_champion_and_a_finished_job_is_not_rerun(db, settings, trained):
    first, _ = trained
    assert run_training_job(settings, "job-1")["version"] == first["version"]  # redelivery: no rerun
    jobs.create_job(db, "job-2", trigger={"reason": "test"}, overrides={"num_epochs": 1})
    second = run_training_job(settings, "job-2")
    doc = versions.get_version(db, second["version"])
    assert doc["parent_version"] == first["version"]
    assert second["version"] > first["version"]
    # Judged on pairs neither model trained on: the same epoch, so nothing of the held-out set is left out,
    # and the champion's held-out queries are all held out again (held-out sets only grow).
    first_doc = versions.get_version(db, first["version"])
    assert doc["split"]["epoch"] == first_doc["split"]["epoch"] == 1 and doc["split"]["lineage"] == [1]
    fairness = doc["gate"]["fairness"]
    assert fairness["excluded_champion_trained"] == 0 and not fairness["champion_may_have_seen"]
    assert fairness["champion_epochs"] == [1]

    def heldout_queries(version):
        path = Path(settings.models_dir) / "versions" / version / "heldout_pairs.jsonl"
        return {json.loads(line)["query"] for line in path.read_text().splitlines()}

    assert heldout_queries(first["version"]) <= heldout_queries(second["version"])
    # Whatever the gate decided, exactly one champion exists and the pointer names it.
    champion = versions.get_champion(db)
    assert db.model_versions.count_documents({"status": "champion"}) == 1
    assert (Path(settings.models_dir) / "champion").resolve().name == champion["version"]
    expected = "champion" if second["promoted"] else "rejected"
    assert doc["status"] == expected
    assert jobs.get_job(db, "job-2")["status"] == ("succeeded" if second["promoted"] else "rejected")


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_from_another_epoch_is_judged_only_on_pairs_it_held_out_too(db, settings, trained):
    """A new TEST_FRACTION starts an epoch; the champion's training queries are left out of its judging."""
    first, _ = trained
    wider = settings.with_overrides(test_fraction=0.35, split_key="")
    jobs.create_job(db, "job-wider", trigger={"reason": "test"}, overrides={"num_epochs": 1})
    second = run_training_job(wider, "job-wider")
    doc = versions.get_version(db, second["version"])
    assert doc["split"]["epoch"] == 2 and doc["split"]["test_fraction"] == 0.35
    fairness = doc["gate"]["fairness"]
    # Same key, wider fraction: the old held-out queries stay held out, the new ones the champion trained on.
    assert fairness["champion_epochs"] == [1] and fairness["excluded_champion_trained"] > 0
    assert doc["gate"]["heldout_pairs"] == fairness["heldout_pairs"] - fairness["excluded_champion_trained"]


@pytest.mark.integration
@pytest.mark.slow
def test_feedback_with_like_and_dislike_swapped_never_replaces_the_champion(db, settings, trained):
    """A client bug swaps every like and dislike: the new held-out pairs agree with the swapped model,
    so only the champion's frozen held-out pairs can show that it learned the opposite."""
    first, _ = trained
    assert (Path(settings.models_dir) / "versions" / first["version"] / "heldout_pairs.jsonl").exists()
    demo.seed_feedback(db, seed=7)  # more traffic, then the swap hits every stored reaction
    db.inferences.update_many({"feedback": "like"}, {"$set": {"feedback": "tmp"}})
    db.inferences.update_many({"feedback": "dislike"}, {"$set": {"feedback": "like"}})
    db.inferences.update_many({"feedback": "tmp"}, {"$set": {"feedback": "dislike"}})
    jobs.create_job(db, "job-swapped", trigger={"reason": "test"})

    outcome = run_training_job(settings, "job-swapped")

    job = jobs.get_job(db, "job-swapped")
    before, after = job["metrics"]["before"]["roc_auc"], job["metrics"]["after"]["roc_auc"]
    assert after > before + settings.min_improvement  # on the new pairs alone it would have been promoted
    assert outcome["status"] == "rejected" and "champion's frozen held-out pairs" in job["reason"]
    assert versions.get_champion(db)["version"] == first["version"]
    meta = json.loads((Path(settings.models_dir) / "versions" / job["version"] / "training_metadata.json").read_text())
    assert meta["gate"]["reference"]["high"] < -settings.gate_max_regression


@pytest.mark.integration
def test_a_24_feedback_job_registers_nothing_and_says_why(db, settings):
    _seed_pairs(db, 12, ["like", "dislike"])
    jobs.create_job(db, "small", trigger={"reason": "test"})
    with pytest.raises(JobRefused):
        run_training_job(settings.with_overrides(min_feedback=10), "small")
    job = jobs.get_job(db, "small")
    assert job["status"] == "failed"
    assert "held-out set too small to decide" in job["reason"] and "from 24 usable pairs" in job["reason"]
    assert f"at least {settings.min_heldout_pairs} pairs" in job["reason"]
    assert db.model_versions.count_documents({}) == 0 and versions.read_champion(db).version is None


@pytest.mark.integration
@pytest.mark.slow
def test_a_job_whose_champion_changed_while_it_trained_is_not_promoted(db, settings):
    """The job judges its candidate against the base model; meanwhile an operator promotes a version."""
    from eduranker import champion
    from tests.fake_versions import make_version

    demo.seed_feedback(db, seed=1)
    make_version(settings.models_dir, "v0050")
    versions.insert_version(db, {"version": "v0050", "job_id": "hand-made"})
    jobs.create_job(db, "job-late", trigger={"reason": "test"})

    def switch_champion_mid_training(progress):
        if progress["stage"] == "train" and versions.read_champion(db).version is None:
            champion.promote(db, settings.models_dir, "v0050", by="operator", reason="while the job trained")

    outcome = run_training_job(settings, "job-late", on_progress=switch_champion_mid_training)
    job = jobs.get_job(db, "job-late")
    assert outcome["status"] == "rejected" and job["promoted"] is False
    assert "lower bound clears" in job["gate_reason"]  # the gate said yes, against the base model
    assert "champion changed from the base model to v0050" in job["reason"]
    assert versions.read_champion(db).version == "v0050"
    assert versions.get_version(db, job["version"])["status"] == "rejected"
