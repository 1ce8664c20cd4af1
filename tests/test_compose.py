"""docker-compose.yml validated by a real compose implementation, and the security settings it must keep."""

import shutil
import subprocess

import pytest
import yaml

from tests.celery_worker import ROOT


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
        "mongo", "redis", "worker", "producer", "flower"}  # fmt: skip
    for name in ("worker", "producer"):
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--replSet" in " ".join(services["mongo"]["entrypoint"])


def test_worker_reserves_one_gpu_and_runs_one_job_at_a_time(compose_config):
    worker = compose_config["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and len(devices[0]["device_ids"]) == 1
    assert worker["command"][worker["command"].index("-c") + 1] == "1"
    assert worker["command"][worker["command"].index("-Q") + 1] == "training"


def test_a_stopping_worker_hands_its_job_back_within_the_grace_period(compose_config):
    worker = compose_config["services"]["worker"]
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"  # SIGTERM → soft shutdown, then cancel
    soft = float(worker["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"])
    grace = worker["stop_grace_period"]
    grace_s = float(str(grace).rstrip("s")) if not isinstance(grace, int | float) else grace
    assert soft + 20 <= grace_s <= soft + 60  # room for the hand-back, not an hour of SIGKILL-less waiting


def test_producers_run_as_a_leader_and_a_standby(compose_config):
    assert compose_config["services"]["producer"]["deploy"]["replicas"] == 2


def test_redis_and_flower_require_secrets_from_the_environment(compose_config):
    services = compose_config["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:change-me-flower"
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()  # values only come from .env


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
