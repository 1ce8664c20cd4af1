"""A job enqueued through Celery on real redis, run by a real worker process, ends with a version."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from console import demo
from eduranker.store import versions
from tests.celery_worker import ROOT, settings_env, start_worker, stop_worker


@pytest.fixture()
def celery_settings(settings, redis_url):
    return replace(
        settings,
        celery_broker_url=f"{redis_url}/0",
        celery_result_backend=f"{redis_url}/1",
        num_epochs=3,  # the default: on this seed two epochs gain +0.10 with an interval reaching below 0
    )


@pytest.mark.integration
@pytest.mark.slow
def test_train_reranker_delay_from_a_python_shell_registers_a_loadable_champion(db, celery_settings, tmp_path):
    demo.seed_feedback(db, seed=2)
    worker = start_worker(celery_settings, tmp_path / "worker.log")
    try:
        # Exactly what docs/operations.md tells an operator to type.
        shell = (
            "import json; from worker.tasks import train_reranker;"
            "r = train_reranker.delay(reason='from a shell');"
            "print(json.dumps(r.get(timeout=600)))"
        )
        out = subprocess.run(
            [sys.executable, "-c", shell], cwd=ROOT, env=settings_env(celery_settings),
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        stop_worker(worker)

    assert result["status"] == "succeeded"
    job = db.training_jobs.find_one({"_id": result["job_id"]})
    assert job["trigger"] == {"reason": "from a shell", "source": "task"}
    assert job["overrides"] == {"reason": "from a shell"}
    assert job["worker"].startswith("test@")
    doc = versions.get_version(db, result["version"])
    assert doc["status"] == "champion"
    assert doc["metrics"]["after"]["roc_auc"] is not None and doc["metrics"]["before"]["roc_auc"] is not None

    # The champion folder loads as the model a CrossEncoder wraps (tests/test_job.py loads it with
    # sentence-transformers' CrossEncoder in a fresh process; importing that library costs ~10 CPU-s).
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(Path(celery_settings.models_dir) / "champion")
    assert loaded.config.num_labels == 1
