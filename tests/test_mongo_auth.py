"""MongoDB with authentication: credentials in MONGODB_URL work, wrong ones fail clearly and never leak."""

from dataclasses import replace

import pytest
from pymongo import MongoClient

from eduranker import cli
from eduranker.errors import AccessDenied
from eduranker.localservers import secantus_server
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors
from eduranker.store.connection import redact_url

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
