"""Secrets: the example values of .env.example are refused, X_FILE works, no message shows a password."""

import subprocess
import sys

import pytest

from eduranker.secrets import redacted
from eduranker.settings import Settings, SettingsError
from tests.celery_worker import ROOT

EXAMPLE_BROKER = "redis://:change-me-redis@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONGODB_URL", "mongodb://eduranker_trainer:change-me-trainer@mongo:27017/?replicaSet=rs0"),
        ("CELERY_BROKER_URL", EXAMPLE_BROKER),
        ("CELERY_RESULT_BACKEND", "redis://:Change-Me-redis@127.0.0.1:6379/1"),
    ],
)
def test_an_example_password_is_refused_naming_the_variable_without_showing_it(variable, value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=") and "example password" in message
    assert "hange-me" not in message and ":***@" in message


def test_real_passwords_and_urls_without_one_are_accepted():
    s = Settings.from_env({"CELERY_BROKER_URL": "redis://:9f2c1e0b7a@redis:6379/0",
                           "MONGODB_URL": "mongodb://127.0.0.1:27017/?directConnection=true"})  # fmt: skip
    assert s.celery_broker_url == "redis://:9f2c1e0b7a@redis:6379/0"


def test_a_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "broker_url"
    secret.write_text("redis://:from-a-file@redis:6379/0\n")
    assert Settings.from_env({"CELERY_BROKER_URL_FILE": str(secret)}).celery_broker_url == (
        "redis://:from-a-file@redis:6379/0"
    )
    (tmp_path / "empty").write_text("")
    cases = [
        ({"CELERY_BROKER_URL_FILE": str(tmp_path / "missing")}, "CELERY_BROKER_URL_FILE=", "cannot be read"),
        ({"CELERY_BROKER_URL_FILE": str(tmp_path / "empty")}, "CELERY_BROKER_URL_FILE=", "the file is empty"),
        ({"CELERY_BROKER_URL_FILE": str(secret), "CELERY_BROKER_URL": "redis://x"}, "CELERY_BROKER_URL_FILE=",
         "is set too"),
    ]  # fmt: skip
    for env, starts, why in cases:
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env)
        assert str(caught.value).startswith(starts) and why in str(caught.value)
    example = tmp_path / "example"
    example.write_text(EXAMPLE_BROKER)
    with pytest.raises(SettingsError, match="example password"):
        Settings.from_env({"CELERY_BROKER_URL_FILE": str(example)})


def test_redacted_hides_only_the_password():
    assert redacted("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("mongodb://u:p@h1:1,h2:2/?x=1") == "mongodb://u:***@h1:1,h2:2/?x=1"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "producer"],
        [sys.executable, "-m", "console.cli", "status"],
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training"],
    ],
    ids=["producer", "cli", "worker"],
)
@pytest.mark.parametrize(
    "env",
    [{"CELERY_BROKER_URL": EXAMPLE_BROKER},
     {"MONGODB_URL": "mongodb://eduranker:change-me-mongo@127.0.0.1:27017/?directConnection=true"}],
    ids=["broker", "database"],
)  # fmt: skip
def test_every_process_given_an_example_password_exits_2_with_one_line(argv, env):
    out = subprocess.run(argv, cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid setting: ") and "example password" in lines[0]
    assert "change-me" not in out.stderr and out.stdout == ""
