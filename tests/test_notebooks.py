"""The notebooks run top to bottom with a real kernel (nbclient) against a local cluster: SecantusDB,
redis-server and a Celery worker; their outputs are stripped in git."""

import os
import random
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest

from console import demo
from console.cluster import child_env
from console.localservers import redis_server
from eduranker import champion
from eduranker.models_dir import version_dir
from eduranker.store import ensure_indexes, versions
from eduranker.store.clock import server_now
from tests.celery_worker import ROOT, start_worker, stop_worker

NOTEBOOKS = ROOT / "notebooks"


def _execute(name: str) -> nbformat.NotebookNode:
    """`name` run by a real kernel; with NOTEBOOK_OUTPUT_DIR set, also written there, outputs and all (to
    render and look at: docs/testing.md)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    if os.environ.get("NOTEBOOK_OUTPUT_DIR"):
        nbformat.write(notebook, Path(os.environ["NOTEBOOK_OUTPUT_DIR"]) / name)
    return notebook


def _outputs(notebook):
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _text(notebook) -> str:
    return "".join(out.get("text", "") for out in _outputs(notebook) if out.get("output_type") == "stream")


def _figures(notebook) -> int:
    return sum(1 for out in _outputs(notebook) if "image/png" in out.get("data", {}))


def test_the_notebooks_are_stored_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs stored"
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == {"fine_tune_cross_encoder.ipynb", "online.ipynb"}


@pytest.fixture()
def cluster(settings, db, tmp_path, monkeypatch):
    """A broker of its own and a worker; the kernel reads the cluster from its environment."""
    broker = redis_server(tmp_path / "redis").start()
    url = f"redis://127.0.0.1:{broker.port}"
    s = replace(settings, celery_broker_url=f"{url}/0", celery_result_backend=f"{url}/1")
    ensure_indexes(db)
    worker = start_worker(s, tmp_path / "worker.log")
    for name, value in child_env(s).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    try:
        yield s
    finally:
        stop_worker(worker)
        broker.stop()


def _second_champion_with_interleaved_traffic(db, s):
    """v0002 (v0001's weights, promoted by hand over it) and searches interleaving both since then, the
    users liking v0002's results a little more often."""
    shutil.copytree(version_dir(s.models_dir, "v0001"), version_dir(s.models_dir, "v0002"))
    first = versions.get_version(db, "v0001")
    keep = ("job_id", "metrics", "gate", "gate_reason", "snapshot", "artifact_path", "promoted")
    versions.insert_version(db, {**{k: first[k] for k in keep if k in first}, "version": "v0002",
                                 "artifact_path": "versions/v0002"})  # fmt: skip
    champion.promote(db, s.models_dir, "v0002", by="test", reason="a second champion", force=True)
    rng, start = random.Random(7), server_now(db) + timedelta(seconds=1)
    for i in range(160):
        at = start + timedelta(seconds=i)
        query = db["user_queries"].insert_one({"query_text": f"q{i}", "user_id": f"user-{i}", "created_at": at})
        for rank in range(1, 7):
            version = "v0002" if rank % 2 else "v0001"
            doc = {"query_id": query.inserted_id, "resource_id": f"r{rank}", "rank": rank, "score": 0.5,
                   "model_version": version, "created_at": at}  # fmt: skip
            if rng.random() < 0.6:
                liked = rng.random() < (0.6 if version == "v0002" else 0.5)
                doc.update(feedback="like" if liked else "dislike", feedback_at=at + timedelta(milliseconds=rank))
            db["inferences"].insert_one(doc)


@pytest.mark.integration
@pytest.mark.slow
def test_both_notebooks_run_top_to_bottom_on_the_local_cluster(cluster, db):
    demo.seed_feedback(db, seed=1)  # the demo's feedback: enough for a first model
    tuned = _execute("fine_tune_cross_encoder.ipynb")
    text = _text(tuned)
    assert "skipped" in text and "enough for the gate" in text, text
    assert "PROMOTED v0001" in text, text
    assert "gate evidence: " in text and "<- this notebook's job" in text
    # The data's four panels, the before/after bars and the job's six report plots.
    assert _figures(tuned) >= 8, _figures(tuned)
    assert versions.get_version(db, "v0001")["status"] == "champion"
    assert not [o for o in _outputs(tuned) if o.get("output_type") == "error"]

    _second_champion_with_interleaved_traffic(db, cluster)
    online = _execute("online.ipynb")
    text = _text(online)
    assert "champion v0002, compared with v0001" in text, text
    assert "interleaving: v0002 won" in text, text
    assert _figures(online) == 2, text
    assert "no challenge recorded on any version" in text
    assert not [o for o in _outputs(online) if o.get("output_type") == "error"]


@pytest.mark.integration
@pytest.mark.slow
def test_with_too_little_feedback_the_fine_tuning_notebook_says_so_and_enqueues_nothing(settings, db, monkeypatch):
    ensure_indexes(db)
    for name, value in child_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    corpus = demo.insert_corpus(db, random.Random(0))
    served = demo.serve_results(db, corpus, random.Random(0))[:30]  # a few reactions, far from enough
    for inference_id, value in demo.feedback_updates(served, random.Random(0)):
        demo.give_feedback(db, inference_id, value)
    tuned = _execute("fine_tune_cross_encoder.ipynb")
    text = _text(tuned)
    assert "NOT ENOUGH FEEDBACK: " in text and "the gate needs 40 pairs and 8 queries" in text, text
    assert "no job enqueued: not enough feedback" in text
    assert db["training_jobs"].count_documents({}) == 0
    assert not [o for o in _outputs(tuned) if o.get("output_type") == "error"]
