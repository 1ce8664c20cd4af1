import subprocess
import sys

import pytest

from eduranker.settings import Settings, SettingsError
from tests.celery_worker import ROOT


def test_defaults_name_the_production_model_and_database():
    s = Settings.from_env({})
    assert s.base_model_name == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert s.mongodb_db == "edu_ranker_db"
    assert s.models_dir == "models"
    assert s.min_feedback == 10


def test_environment_values_are_typed():
    s = Settings.from_env({"NUM_EPOCHS": "5", "LEARNING_RATE": "3e-5", "WARM_START": "yes", "MONGODB_DB": "other"})
    assert (s.num_epochs, s.learning_rate, s.warm_start, s.mongodb_db) == (5, 3e-5, True, "other")


@pytest.mark.parametrize(
    "name,value,accepted",
    [
        ("NUM_EPOCHS", "three", "expected a whole number"),
        ("NUM_EPOCHS", "0", "must be at least 1"),
        ("SEED", "1.5", "expected a whole number"),
        ("WARM_START", "maybe", "expected true/false"),
        ("TEST_FRACTION", "0", "must be ≥ 0.05 and ≤ 0.5"),
        ("TEST_FRACTION", "0.9", "must be ≥ 0.05 and ≤ 0.5"),
        ("JOB_HEARTBEAT_SECONDS", "0", "must be ≥ 0.1"),
        ("MIN_IMPROVEMENT", "nan", "expected a finite number"),
        ("MIN_IMPROVEMENT", "-0.1", "must be ≥ 0"),
        ("LEARNING_RATE", "inf", "expected a finite number"),
        ("TASK_TIME_LIMIT", "0", "must be at least 30"),
        ("GATE_CONFIDENCE", "1", "must be > 0.5 and < 1"),
        ("GATE_BOOTSTRAP_SAMPLES", "10", "must be at least 100"),
        ("MIN_HELDOUT_QUERIES", "1", "must be at least 2"),
        ("TRAIN_MIN_MINORITY", "0.7", "≤ 0.5"),
        ("PRODUCER_LEASE_SECONDS", "0", "must be ≥ 1"),
        ("MONGODB_URL", "localhost:27017", "must start with mongodb://"),
        ("CELERY_BROKER_URL", "", "must start with redis://"),
        ("WORKER_GPU", "cuda:0", "GPU index"),
        ("MONGODB_DB", "a/b", "database name"),
    ],
)
def test_bad_values_name_the_variable_the_value_and_what_is_accepted(name, value, accepted):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r}: ") and accepted in message


@pytest.mark.parametrize(
    "name,value,field,expected",
    [
        ("TEST_FRACTION", "0.05", "test_fraction", 0.05),
        ("JOB_HEARTBEAT_SECONDS", "0.5", "job_heartbeat_seconds", 0.5),
        ("MIN_IMPROVEMENT", "0", "min_improvement", 0.0),
        ("TRAIN_COOLDOWN_SECONDS", "0", "train_cooldown_seconds", 0.0),
        ("WORKER_GPU", "1", "worker_gpu", "1"),
        ("MONGODB_URL", "mongodb+srv://u:p@cluster/x", "mongodb_url", "mongodb+srv://u:p@cluster/x"),
    ],
)
def test_values_at_the_edges_are_accepted(name, value, field, expected):
    assert getattr(Settings.from_env({name: value}), field) == expected


def test_overrides_reject_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="unknown settings"):
        Settings().with_overrides(num_epoch=2)
    with pytest.raises(SettingsError, match="BATCH_SIZE"):
        Settings().with_overrides(batch_size=0)
    assert Settings().with_overrides(batch_size=4).batch_size == 4


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "producer"],
        [sys.executable, "-m", "console.cli", "status"],
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training"],
    ],
    ids=["producer", "cli", "worker"],
)
def test_every_process_started_with_a_bad_setting_exits_2_with_one_line(argv):
    env = {"PATH": "/usr/bin:/bin", "TEST_FRACTION": "0"}
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["invalid setting: TEST_FRACTION='0': must be ≥ 0.05 and ≤ 0.5"]
    assert out.stdout == ""


def test_every_setting_declares_its_default_and_check_in_one_place():
    """`setting(default, check)`: a field declared otherwise would skip its check (or have none)."""
    from dataclasses import MISSING, fields

    undeclared = [f.name for f in fields(Settings) if "check" not in f.metadata or f.default is MISSING]
    assert undeclared == []
    unchecked = sorted(f.name for f in fields(Settings) if f.metadata["check"] is None)
    # true or false: the type is the check
    assert unchecked == ["bound", "freeze_embeddings", "online_guard", "warm_start"]
