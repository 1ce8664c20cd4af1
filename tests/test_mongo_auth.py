"""MongoDB with authentication: credentials in MONGODB_URL work, wrong ones fail clearly and never leak."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from pymongo import MongoClient

from console import cli, demo
from console.localservers import secantus_server
from eduranker.errors import AccessDenied
from eduranker.store import connect, connection, ensure_indexes, jobs, retryable_on_mongo_errors
from eduranker.store.connection import redact_url
from tests.celery_worker import PATIENCE, ROOT
from worker.job import run_training_job

PASSWORD = "correct-horse-battery"


@pytest.fixture()
def auth_server(tmp_path):
    """A SecantusDB with one user, restarted with --auth (its documented way to provision users)."""
    server = secantus_server(tmp_path / "db").start()
    with MongoClient(f"mongodb://127.0.0.1:{server.port}/?directConnection=true") as client:
        client.admin.command("createUser", "trainer", pwd=PASSWORD, roles=["root"])
    server.stop()
    server.argv.append("--auth")
    server.start()
    yield server
    server.stop()


def url(port, user=None, password=None):
    who = f"{user}:{password}@" if user else ""
    return f"mongodb://{who}127.0.0.1:{port}/?directConnection=true&authSource=admin"


@pytest.mark.integration
def test_credentials_in_the_url_work_and_anonymous_access_is_refused(auth_server, settings):
    good = replace(settings, mongodb_url=url(auth_server.port, "trainer", PASSWORD))
    db = connect(good)
    ensure_indexes(db)
    assert jobs.create_job(db, "job-auth", trigger={"reason": "test"})
    assert jobs.get_job(db, "job-auth")["status"] == "queued"

    for bad in (url(auth_server.port), url(auth_server.port, "trainer", "wrong")):
        with pytest.raises(AccessDenied), retryable_on_mongo_errors():
            connect(replace(settings, mongodb_url=bad)).training_jobs.find_one()


@pytest.mark.integration
def test_the_cli_reports_refused_credentials_without_printing_the_password(auth_server, settings, capsys):
    good = replace(settings, mongodb_url=url(auth_server.port, "trainer", PASSWORD))
    assert cli.main(["status"], settings=good) == cli.EXIT_OK

    bad = replace(settings, mongodb_url=url(auth_server.port, "trainer", "not-" + PASSWORD))
    assert cli.main(["status"], settings=bad) == cli.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "refused" in err and "credentials" in err
    assert PASSWORD not in err and "trainer:***@" in err


@pytest.mark.integration
def test_redact_url_hides_only_the_password():
    assert redact_url("mongodb://u:p%40ss@h:1/db?x=1") == "mongodb://u:***@h:1/db?x=1"
    assert redact_url("mongodb://h:27017/?directConnection=true") == "mongodb://h:27017/?directConnection=true"


# The role compose's init creates (deploy/mongo-init/): the same JSON, so the test checks what ships.
ROLE_SPEC = ROOT / "deploy" / "mongo-init" / "trainer-role.json"
SEARCH_API_COLLECTIONS = {"inferences", "user_queries", "resources"}


def trainer_privileges(db_name):
    spec = json.loads(ROLE_SPEC.read_text())
    return spec["role"], [{**p, "resource": {**p["resource"], "db": db_name}} for p in spec["privileges"]]


@pytest.fixture()
def role_server(tmp_path, settings):
    """SecantusDB with --auth and three users: root (the search API's stand-in), the trainer with
    exactly the shipped role, and a user that may only read."""
    server = secantus_server(tmp_path / "db").start()
    with MongoClient(f"mongodb://127.0.0.1:{server.port}/?directConnection=true") as client:
        client.admin.command("createUser", "root", pwd=PASSWORD, roles=["root"])
        role, privileges = trainer_privileges(settings.mongodb_db)
        client.admin.command("createRole", role, privileges=privileges, roles=[])
        client.admin.command("createUser", "trainer", pwd=PASSWORD, roles=[{"role": role, "db": "admin"}])
        client.admin.command("createUser", "reader", pwd=PASSWORD, roles=[{"role": "read", "db": settings.mongodb_db}])
    server.stop()
    server.argv.append("--auth")
    server.start()
    yield server
    server.stop()


def test_the_shipped_role_writes_only_the_trainers_collections():
    _role, privileges = trainer_privileges("edu_ranker_db")
    writes = {"insert", "update", "remove", "dropCollection", "dropDatabase", "renameCollectionSameDB"}
    for p in privileges:
        assert p["resource"]["collection"], "no database-wide grant"
        if p["resource"]["collection"] in SEARCH_API_COLLECTIONS:
            assert not writes & set(p["actions"]), p
    owned = {p["resource"]["collection"] for p in privileges} - SEARCH_API_COLLECTIONS
    code = {c for c in dir(connection) if c.isupper()}
    for name in ("TRAINING_JOBS", "MODEL_VERSIONS", "COUNTERS", "PRODUCER_STATE", "CHAMPION_RECORD"):
        assert name in code and getattr(connection, name) in owned


@pytest.mark.integration
@pytest.mark.slow
def test_worker_and_cli_run_with_the_trainer_role_and_fail_cleanly_without_it(role_server, settings):
    root = MongoClient(url(role_server.port, "root", PASSWORD), tz_aware=True)
    demo.seed_feedback(root[settings.mongodb_db], seed=1)  # written as the search API would
    trainer = replace(settings, mongodb_url=url(role_server.port, "trainer", PASSWORD))
    db = connect(trainer)
    ensure_indexes(db)
    jobs.create_job(db, "least-privilege", trigger={"reason": "test"})
    outcome = run_training_job(trainer, "least-privilege")
    assert outcome["status"] in {"succeeded", "rejected"} and outcome["version"] == "v0001", outcome
    assert cli.main(["status"], settings=trainer) == cli.EXIT_OK

    reader = replace(settings, mongodb_url=url(role_server.port, "reader", PASSWORD))
    root[settings.mongodb_db].training_jobs.insert_one({"_id": "read-only", "status": "queued", "attempts": 0})
    with pytest.raises(AccessDenied):
        run_training_job(reader, "read-only")
    for bad in (url(role_server.port), url(role_server.port, "trainer", "wrong")):
        with pytest.raises(AccessDenied):
            run_training_job(replace(settings, mongodb_url=bad), "least-privilege")
        assert cli.main(["status"], settings=replace(settings, mongodb_url=bad)) == cli.EXIT_UNREACHABLE
    root.close()


@pytest.mark.integration
@pytest.mark.slow
def test_the_producer_runs_with_the_trainer_role_and_exits_cleanly_without_it(role_server, settings, redis_url):
    root = MongoClient(url(role_server.port, "root", PASSWORD), tz_aware=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONGODB_DB": settings.mongodb_db,
           "CELERY_BROKER_URL": f"{redis_url}/0", "CELERY_RESULT_BACKEND": f"{redis_url}/1",
           "TRAIN_MIN_FEEDBACK": "20", "TRAIN_NEW_FEEDBACK": "10"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**env, "MONGODB_URL": url(role_server.port, "trainer", PASSWORD)})  # fmt: skip
    try:
        demo.seed_feedback(root[settings.mongodb_db], seed=2)
        deadline = time.monotonic() + 120 * PATIENCE  # a safety net only
        while root[settings.mongodb_db].training_jobs.count_documents({"automatic": True}) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for bad in (url(role_server.port), url(role_server.port, "trainer", "wrong")):
        out = subprocess.run([sys.executable, "-m", "producer"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**env, "MONGODB_URL": bad})  # fmt: skip
        assert out.returncode == 3, out.stderr
        assert PASSWORD not in out.stderr and ":wrong@" not in out.stderr
    root.close()
