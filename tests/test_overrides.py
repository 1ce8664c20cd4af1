"""A task's overrides are hostile input: typed, ranged, and a base model only from the allowed set,
refused with the reason before any model (or torch) loads."""

import json
import os
import subprocess
import sys

import pytest

from eduranker.overrides import OverrideRefused, checked_overrides
from eduranker.settings import Settings
from tests.celery_worker import ROOT

BASE = Settings(base_model_name="cross-encoder/ms-marco-MiniLM-L-6-v2", allowed_base_models="org/other-model")


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"num_epochs": 10000}, "num_epochs=10000: must be between 1 and 50"),
        ({"num_epochs": 0}, "num_epochs=0: must be between 1 and 50"),
        ({"num_epochs": 2.5}, "num_epochs=2.5: expected a whole number"),
        ({"num_epochs": True}, "num_epochs=True: expected a whole number"),
        ({"num_epochs": "3"}, "num_epochs='3': expected a whole number"),
        ({"batch_size": 1_000_000}, "batch_size=1000000: must be between 1 and 1024"),
        ({"learning_rate": 5.0}, "learning_rate=5.0: must be between"),
        ({"learning_rate": float("nan")}, "learning_rate=nan: expected a finite number"),
        ({"head_learning_rate": -1e-3}, "head_learning_rate=-0.001: must be between"),
        ({"max_length": 100_000}, "max_length=100000: must be between 8 and 512"),
        ({"seed": -1}, "seed=-1: must be between"),
        ({"warm_start": "yes"}, "warm_start='yes': expected true or false"),
        ({"base_model": "../../etc"}, "base_model='../../etc': not BASE_MODEL_NAME, not in ALLOWED_BASE_MODELS"),
        ({"base_model": "/etc"}, "base_model='/etc': not BASE_MODEL_NAME"),
        ({"base_model": "evil/any-hub-repo"}, "base_model='evil/any-hub-repo': not BASE_MODEL_NAME"),
        ({"base_model": ["x"]}, "base_model=['x']: expected a model name"),
        ({"reason": "x" * 501}, "reason: expected text of at most 500 characters"),
        ({"epochs": 3}, "unknown job overrides: epochs"),
    ],
)
def test_each_bad_override_is_refused_with_its_name_and_reason(overrides, refusal):
    with pytest.raises(OverrideRefused) as caught:
        checked_overrides(BASE, overrides)
    assert refusal in str(caught.value)


def test_good_overrides_map_to_settings_fields():
    good = {"num_epochs": 5, "batch_size": 32, "learning_rate": 3e-5, "head_learning_rate": 1e-3, "max_length": 128,
            "seed": 7, "warm_start": True, "reason": "after data fix", "base_model": None}  # fmt: skip
    assert checked_overrides(BASE, good) == {
        "num_epochs": 5, "batch_size": 32, "learning_rate": 3e-5, "head_learning_rate": 1e-3,
        "max_length": 128, "seed": 7, "warm_start": True,
    }  # fmt: skip
    assert checked_overrides(BASE, {"head_learning_rate": 1}) == {"head_learning_rate": 1}  # an int is a number


def test_base_model_is_the_configured_one_an_allowed_hub_name_or_a_folder_under_the_root(tmp_path):
    root = tmp_path / "models-root"
    (root / "mine").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    s = Settings(base_model_name="cross-encoder/ms-marco-MiniLM-L-6-v2", allowed_base_models="org/other-model",
                 base_models_root=str(root))  # fmt: skip
    assert checked_overrides(s, {"base_model": s.base_model_name}) == {"base_model_name": s.base_model_name}
    # Another model is not the one BASE_MODEL_REVISION pins: it loads at the hub's default branch.
    assert checked_overrides(s, {"base_model": "org/other-model"}) == {
        "base_model_name": "org/other-model", "base_model_revision": "",
    }  # fmt: skip
    assert checked_overrides(s, {"base_model": "mine"})["base_model_name"] == str((root / "mine").resolve())
    for escape in ("../outside", "escape", "mine/../../outside", str(tmp_path / "outside"), "."):
        with pytest.raises(OverrideRefused, match="not a folder under BASE_MODELS_ROOT"):
            checked_overrides(s, {"base_model": escape})


def test_allowed_base_models_must_be_hub_names():
    from eduranker.settings import SettingsError

    for bad in ("../../etc", "/abs/path", "org/name/extra", "a b"):
        with pytest.raises(SettingsError, match="ALLOWED_BASE_MODELS"):
            Settings(allowed_base_models=bad)
    assert Settings(allowed_base_models="org/a, org/b.v2,single").allowed_base_models


REFUSED_JOB = """
import json, sys
from eduranker.settings import Settings
from eduranker.store import connect, jobs
from worker.job import run_training_job
s = Settings(**json.loads(sys.argv[1]))
db = connect(s)
jobs.create_job(db, "hostile", trigger={"reason": "test"}, overrides=json.loads(sys.argv[2]))
try:
    run_training_job(s, "hostile")
except Exception as exc:
    print(json.dumps({"error": str(exc), "torch_loaded": "torch" in sys.modules,
                      "pipeline_loaded": "worker.steps" in sys.modules}))
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"base_model": "../../etc"}, "job override base_model='../../etc': not BASE_MODEL_NAME"),
        ({"num_epochs": 10000}, "job override num_epochs=10000: must be between 1 and 50"),
    ],
    ids=["path-escape", "epochs"],
)
def test_a_refused_override_fails_the_job_with_its_reason_before_anything_loads(settings, db, overrides, reason):
    fields = {k: getattr(settings, k) for k in ("mongodb_url", "mongodb_db", "models_dir", "base_model_name")}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", REFUSED_JOB, json.dumps(fields), json.dumps(overrides)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["error"].startswith(reason)
    assert seen["torch_loaded"] is False and seen["pipeline_loaded"] is False
    job = db.training_jobs.find_one({"_id": "hostile"})
    assert job["status"] == "failed" and job["reason"].startswith(reason)
    assert not os.path.exists(os.path.join(settings.models_dir, "versions"))
