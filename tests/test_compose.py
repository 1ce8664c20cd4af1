"""docker-compose.yml validated by a real compose implementation, and the security settings it must keep."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.celery_worker import ROOT

WORKERS = ("gpu0", "gpu1")  # one Celery worker per GPU


@pytest.fixture(scope="module")
def compose_config():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is installed by scripts/setup"
    out = subprocess.run(
        [exe, "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_has_every_service_and_waits_for_health(compose_config):
    services = compose_config["services"]
    # Services of an opt-in profile (monitoring: tests/test_monitoring_deploy.py) start only when asked for.
    assert {name for name, service in services.items() if not service.get("profiles")} == {
        "mongo", "redis", *WORKERS, "producer", "flower"}  # fmt: skip
    for name in (*WORKERS, "producer"):
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--replSet" in " ".join(services["mongo"]["entrypoint"])


def _arg(worker, flag):
    return worker["command"][worker["command"].index(flag) + 1]


@pytest.mark.parametrize("name", WORKERS)
def test_each_worker_reserves_one_gpu_of_its_own_and_runs_one_job_at_a_time(compose_config, name):
    worker = compose_config["services"][name]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    # Its own GPU of the host (gpu0 → 0, gpu1 → 1), pinned: inside the container it is the only one, GPU 0.
    assert devices == [{"driver": "nvidia", "capabilities": ["gpu"], "device_ids": [name.removeprefix("gpu")]}]
    assert worker["environment"]["WORKER_GPU"] == "0"
    assert _arg(worker, "-c") == "1"
    assert _arg(worker, "-n") == f"{name}@%h"
    assert f'-d "{name}@' in " ".join(worker["healthcheck"]["test"])  # its own node answers its healthcheck
    assert _arg(worker, "-Q") == "training"  # the example: both serve the default index


def test_each_worker_takes_its_own_queues_and_gpu_from_the_environment():
    """A worker dedicated to some indexes: gpu1 to index fr's queue on the host's GPU 3, gpu0 to the
    default index's and en's on GPU 2."""
    env = {**os.environ, "WORKER_GPU0_QUEUES": "training,training.en", "WORKER_GPU0_ID": "2",
           "WORKER_GPU1_QUEUES": "training.fr", "WORKER_GPU1_ID": "3"}  # fmt: skip
    out = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    gpu0, gpu1 = services["gpu0"], services["gpu1"]
    assert (_arg(gpu0, "-Q"), _arg(gpu1, "-Q")) == ("training,training.en", "training.fr")
    ids = [w["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for w in (gpu0, gpu1)]
    assert ids == [["2"], ["3"]]


@pytest.mark.parametrize("name", WORKERS)
def test_a_stopping_worker_hands_its_job_back_within_the_grace_period(compose_config, name):
    worker = compose_config["services"][name]
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"  # SIGTERM → soft shutdown, then cancel
    soft = float(worker["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"])
    grace = worker["stop_grace_period"]
    grace_s = float(str(grace).rstrip("s")) if not isinstance(grace, int | float) else grace
    assert soft + 20 <= grace_s <= soft + 60  # room for the hand-back, not an hour of SIGKILL-less waiting


def test_producers_run_as_a_leader_and_a_standby(compose_config):
    assert compose_config["services"]["producer"]["deploy"]["replicas"] == 2


EXAMPLE_SECRETS = ("change-me-mongo", "change-me-redis", "change-me-flower", "change-me-trainer")


def _argv_of(service):
    """Everything that ends up on a process's command line: entrypoint, command and healthcheck."""
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += [value] if isinstance(value, str) else value
    parts += (service.get("healthcheck") or {}).get("test") or []
    return " ".join(parts)


def test_secrets_come_from_the_environment_and_never_onto_a_command_line(compose_config):
    services = compose_config["services"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:change-me-flower"
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()  # values only come from .env
    for name, service in services.items():
        argv = _argv_of(service)
        assert not [s for s in EXAMPLE_SECRETS if s in argv], name  # `ps` shows command lines to every user
        assert " -p " not in argv and "--requirepass" not in argv and "redis-cli -a" not in argv, name


def test_flower_gets_no_database_credentials_keeps_no_pickle_and_cannot_control_workers(compose_config):
    flower = compose_config["services"]["flower"]
    assert not [k for k in flower["environment"] if k.startswith("MONGO")]
    argv = _argv_of(flower)
    assert "--persistent" not in argv and "--db=" not in argv  # Flower's state file is a pickle shelve
    assert "--read_only=True" in flower["command"]  # no shutdown, pool control, task sending or revoking
    # Only read-only binds of files from the repository: nowhere to keep state.
    assert all(str(v).startswith(str(ROOT)) and str(v).endswith(":ro") for v in flower.get("volumes", []))
    assert "flower-data" not in compose_config.get("volumes", {})


def test_the_trainer_uses_its_own_user_and_only_mongo_holds_the_root_account(compose_config):
    services = compose_config["services"]
    root_password = "change-me-mongo"
    for name in (*WORKERS, "producer"):
        url = services[name]["environment"]["MONGODB_URL"]
        assert url.startswith("mongodb://eduranker_trainer:change-me-trainer@"), url
    for name, service in services.items():
        env = " ".join(str(v) for v in (service.get("environment") or {}).values())
        assert (root_password in env) == (name == "mongo"), name
    assert f"{ROOT}/deploy/mongo-init:/docker-entrypoint-initdb.d:ro" in services["mongo"]["volumes"]
    assert (ROOT / "deploy" / "mongo-init" / "trainer-role.json").exists()


def _refusal(service_name, service):
    """Start what the service starts first, with its compose environment, as far as it gets without
    docker: the secrets check of the mongo, redis and flower entrypoints; the trainer's own processes."""
    env = {"PATH": f"{ROOT / 'deploy'}:/usr/bin:/bin", **{k: str(v) for k, v in service["environment"].items()}}
    if service_name in (*WORKERS, "producer"):
        argv = [sys.executable, "-m", "producer"] if service_name == "producer" else [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training"]  # fmt: skip
        env["PYTHONPATH"] = str(ROOT)
    else:
        script = " ".join(service["entrypoint"]) if service_name == "flower" else service["entrypoint"][2]
        names = re.search(r"refuse-example-secrets\.sh ([A-Z_ ]+?) \|\|", script).group(1).split()
        argv = ["sh", str(ROOT / "deploy" / "refuse-example-secrets.sh"), *names]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["mongo", "redis", *WORKERS, "producer", "flower"])
def test_each_service_started_with_an_example_value_exits_2_with_one_line(compose_config, name):
    out = _refusal(name, compose_config["services"][name])
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid setting: ") and "example" in lines[0], lines
    assert not [s for s in EXAMPLE_SECRETS if s in lines[0]]


def test_the_secrets_check_accepts_real_values_and_refuses_empty_ones():
    script = str(ROOT / "deploy" / "refuse-example-secrets.sh")
    ok = subprocess.run(["sh", script, "A", "B"], env={"A": "s3cret", "B": "admin:pw"}, capture_output=True)
    assert ok.returncode == 0 and ok.stderr == b""
    empty = subprocess.run(["sh", script, "A"], env={"A": ""}, capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr == "invalid setting: A is not set\n"


def test_a_missing_secret_is_an_error_not_a_default(tmp_path):
    env = tmp_path / "empty.env"
    env.write_text("")
    out = subprocess.run(
        ["docker-compose", "--env-file", str(env), "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0


def test_no_env_file_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ".env" not in tracked and ".env.example" in tracked


def test_any_setting_in_settings_env_reaches_the_worker_and_the_producer_and_compose_keeps_its_own(tmp_path):
    """No setting has to be listed in docker-compose.yml for an operator to set it: both trainer services
    read settings.env; the servers' addresses and the worker's shutdown timing stay compose's."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / "settings.env").write_text(
        "# an operator's settings\nGATE_CONFIDENCE=0.9\nRETAIN_VERSIONS=4\nMODELS_DIR=/elsewhere\n"
        "WORKER_SOFT_SHUTDOWN_SECONDS=99\n"
    )
    out = subprocess.run(
        ["docker-compose", "--env-file", str(ROOT / ".env.example"), "-f", "docker-compose.yml", "config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    for name in (*WORKERS, "producer"):
        env = services[name]["environment"]
        assert (env["GATE_CONFIDENCE"], env["RETAIN_VERSIONS"], env["MODELS_DIR"]) == ("0.9", "4", "/models"), name
    assert {services[name]["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"] for name in WORKERS} == {"10"}
    assert "GATE_CONFIDENCE" not in services["flower"]["environment"]


def test_the_shipped_settings_env_names_only_settings_each_accepted_and_no_secret():
    from dataclasses import fields

    from eduranker.settings import Settings
    from tests.test_config_plan import shipped_settings

    values = shipped_settings()
    assert set(values) <= {f.name.upper() for f in fields(Settings)}, set(values)
    Settings.from_env(values)  # each value accepted, or SettingsError names it
    assert not {"MONGODB_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"} & set(values)
