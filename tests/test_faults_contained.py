# ruff: noqa: F811 - the fixtures imported from tests/test_producer.py are used as arguments
"""Ordinary faults are contained: the producer keeps leading, its other duties go on, and
`eduranker status` says what failed. Also: index conflicts resolved by key pattern, future-dated
feedback that triggers once and never again, and the hand-back cap. Real SecantusDB and redis-server."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient

from console import cli, demo
from console.localservers import mongo_url, secantus_server
from eduranker.store import ensure_indexes, jobs
from eduranker.store.clock import server_now
from eduranker.store.feedback import count_future_dated
from eduranker.store.online import ensure_online_indexes
from producer.state import load_state
from tests.celery_worker import ROOT, settings_env, stop_worker
from tests.test_producer import (  # noqa: F401 - fixtures
    ThreadedProducer,
    finish_as_worker,
    give,
    psettings,
    queue,
    served,
    wait_for,
)


def duty(db, name):
    return (load_state(db).get("duties") or {}).get(name) or {}


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_record_naming_a_missing_version_fails_one_duty_and_the_producer_goes_on(
    db,
    psettings,
    queue,
    served,
    capsys,
):
    # The registry document of the champion is gone (deleted by hand, a restore from an older backup).
    db.champion.insert_one({"_id": "current", "version": "v0042", "chain": ["v0042"], "seq": 1})
    s = replace(psettings, online_refresh_seconds=1)
    with ThreadedProducer(s) as producer:
        assert wait_for(lambda: duty(db, "online").get("failures", 0) >= 2)
        assert "v0042" in duty(db, "online")["last_error"]
        runs = duty(db, "requeue").get("runs", 0)
        assert wait_for(lambda: duty(db, "requeue").get("runs", 0) > runs)  # housekeeping goes on
        assert duty(db, "requeue")["failures"] == 0 and duty(db, "send")["failures"] == 0
        give(db, served[:25])  # and it still leads and acts: the first crossing is enqueued
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        assert producer.lease.held()
        assert cli.main(["status"], s) == 0
    out = capsys.readouterr().out
    assert "housekeeping: " in out and "online: FAILING" in out and "v0042" in out, out


@pytest.mark.integration
def test_indexes_that_exist_with_the_trainers_key_patterns_under_other_names_are_used_as_they_are(db, settings):
    db.inferences.create_index([("feedback", ASCENDING), ("feedback_at", ASCENDING), ("created_at", ASCENDING)],
                               name="api_feedback_idx")  # fmt: skip
    db.inferences.create_index([("model_version", ASCENDING), ("created_at", ASCENDING)], name="api_by_version")
    db.training_jobs.create_index([("status", ASCENDING), ("created_at", DESCENDING)], name="ops_status")
    ensure_indexes(db)  # no IndexOptionsConflict (code 85): the producer starts, a worker claims
    ensure_online_indexes(db)
    names = set(db.inferences.index_information())
    assert {"api_feedback_idx", "api_by_version"} <= names and "feedback_window" not in names
    jobs.create_job(db, "manual-1", trigger={"reason": "t", "source": "test"})
    from worker.job import claim

    assert claim(db, settings, "manual-1", "w1")["attempts"] == 1


@pytest.mark.integration
def test_an_index_with_the_trainers_keys_but_weaker_guarantees_does_not_stand_in_for_its_index(db):
    db.training_jobs.create_index("active", name="plain_active")  # not unique: one active job not enforced
    ensure_indexes(db)
    assert "one_active_job" in db.training_jobs.index_information()
    jobs.create_job(db, "manual-a", trigger={"reason": "t", "source": "test"})
    assert jobs.create_job(db, "auto-b", trigger={"reason": "t", "source": "test"}, automatic=True) is None


@pytest.mark.integration
@pytest.mark.slow
def test_120_feedbacks_dated_a_day_ahead_give_one_job_then_none_without_new_feedback(
    db,
    psettings,
    queue,
    served,
):
    ahead = server_now(db) + timedelta(days=1)
    for i, (inference_id, value) in enumerate(served[25:145]):  # an API host one day ahead
        dated = {"feedback": value, "feedback_at": ahead + timedelta(seconds=i)}
        db.inferences.update_one({"_id": inference_id}, {"$set": dated})
    with ThreadedProducer(psettings):
        give(db, served[:25])  # the first crossing (TRAIN_MIN_FEEDBACK 20), on time
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        first = db.training_jobs.find_one()
        assert first["trigger"]["watermark"] <= server_now(db)
        finish_as_worker(db, first)
        # Twenty evaluations after the job ended: the 120 (far above TRAIN_NEW_FEEDBACK, 30) never count.
        seen = load_state(db).get("evaluations", 0)
        assert wait_for(lambda: load_state(db).get("evaluations", 0) >= seen + 20, timeout=60)
        assert db.training_jobs.count_documents({}) == 1
        assert "0/30" in load_state(db)["last_decision"], load_state(db)["last_decision"]
    assert count_future_dated(db, server_now(db)) == 120  # what `eduranker status` reports


@pytest.mark.integration
def test_a_job_handed_back_at_the_cap_fails_with_the_count_and_the_last_reason(db):
    jobs.create_job(db, "manual-h", trigger={"reason": "t", "source": "test"})
    for _ in range(3):
        attempt = jobs.claim_job(db, "manual-h", worker="w", stale_after_s=60)["attempts"]
        assert jobs.hand_back(db, "manual-h", attempt, "will retry: timed out", max_handbacks=3) == jobs.QUEUED
    attempt = jobs.claim_job(db, "manual-h", worker="w", stale_after_s=60)["attempts"]
    assert jobs.hand_back(db, "manual-h", attempt, "will retry: timed out", max_handbacks=3) == jobs.FAILED
    job = jobs.get_job(db, "manual-h")
    assert job["status"] == jobs.FAILED and "active" not in job
    assert job["reason"] == "handed back 3 times (JOB_MAX_HANDBACKS 3); last: will retry: timed out"
    assert jobs.hand_back(db, "manual-h", attempt, "again", max_handbacks=3) is None  # ended: fenced out


# The server's own fault injection: mongod's `failCommand` fail point (SecantusDB implements it behind
# --enable-test-commands, as mongod does behind enableTestCommands). Scoped by application name to the
# trainer's client (`appname` in eduranker/store/connection.py), so the test's own client is never refused.
TRAINER_APP = "eduranker-trainer"
REFUSALS = {11601: "Interrupted", 50: "MaxTimeMSExpired", 13: "Unauthorized"}


@pytest.fixture(scope="module")
def failpoint_server_url(tmp_path_factory):
    server = secantus_server(tmp_path_factory.mktemp("failpoints"), None, "--enable-test-commands").start()
    try:
        yield mongo_url(server.port)
    finally:
        server.stop()


@pytest.fixture()
def fdb(failpoint_server_url, psettings):
    """Settings and a database on the fail-point server; every fail point off at the end."""
    s = replace(psettings, mongodb_url=failpoint_server_url)
    client = MongoClient(failpoint_server_url, tz_aware=True)
    client.drop_database(s.mongodb_db)
    try:
        yield s, client[s.mongodb_db]
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")
        client.drop_database(s.mongodb_db)
        client.close()


def refuse(db, code, commands, mode="alwaysOn"):
    data = {"failCommands": commands, "errorCode": code, "appName": TRAINER_APP}
    db.client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


def lease_doc(db):
    return db.producer_state.find_one({"_id": "producer-lease"}) or {}


def keeps_leading_and_house(db, producer):
    """Over three more housekeeping passes, the lease stays this producer's, held at every sample (every
    50 ms; the lease is 2 s) and renewed in the database."""
    renewed, runs, held = lease_doc(db)["expires_at"], duty(db, "requeue").get("runs", 0), []

    def three_more_passes():
        held.append(producer.lease.held())
        return duty(db, "requeue").get("runs", 0) >= runs + 3

    assert wait_for(three_more_passes)
    assert all(held) and lease_doc(db)["holder"] == producer.lease.holder
    assert lease_doc(db)["expires_at"] > renewed


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("code", "then_fixed"), [(11601, True), (50, False), (13, False)])
def test_a_change_stream_the_server_refuses_is_contained_the_producer_keeps_leading_and_working(
    fdb, queue, code, then_fixed, capsys
):
    s, db = fdb
    rng = demo.random.Random(5)
    served = list(demo.feedback_updates(demo.serve_results(db, demo.insert_corpus(db, rng), rng), rng, noise=0.1))
    with ThreadedProducer(s) as producer:
        refuse(db, code, ["getMore"])  # every read of the stream refused until the fault is fixed
        assert wait_for(lambda: (load_state(db).get("loop_failures") or 0) >= 2)
        assert f"'code': {code}" in load_state(db)["loop_error"], load_state(db)["loop_error"]
        keeps_leading_and_house(db, producer)
        give(db, served[:25])  # the trigger still counts without the stream's wake-ups: one job
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1)
        assert cli.main(["status"], s) == 0
        out = capsys.readouterr().out
        assert "refused or failed watches" in out and f"'code': {code}" in out, out
        if not then_fixed:  # the way back is the same whatever the code: once is enough (it waits ~16 s)
            return
        refuse(db, code, ["getMore"], mode="off")  # fixed: at its next try the producer watches again
        more = iter(range(25, len(served)))

        def seen_again():  # a feedback every 0.2 s until the reopened stream brings one in
            k = next(more)
            give(db, served[k : k + 1], start=k)
            return producer.events_seen > 0

        assert wait_for(seen_again, timeout=90, interval=0.2)  # longer than the longest back-off (30 s)


def denied_by_modes(tmp_path) -> list[str]:
    """A command prefix under which `chmod 000` denies: none for a user; for root (whose permission
    override ignores modes) setpriv(1) dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Skips, with
    the reason, where neither works."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, where chmod 000 denies nothing, and setpriv(1) is not installed")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    closed = tmp_path / "closed"
    closed.mkdir(mode=0)
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; os.listdir({str(closed)!r})"],
                               capture_output=True, text=True)  # fmt: skip
    finally:
        closed.rmdir()
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"root's permission override could not be dropped here: {probe.stderr.strip()[-200:]}")
    return prefix


@pytest.mark.integration
@pytest.mark.slow
def test_a_models_volume_that_denies_reading_fails_reconcile_alone_and_the_producer_goes_on(
    db, psettings, queue, served, tmp_path, capsys
):
    prefix = denied_by_modes(tmp_path)
    models = Path(psettings.models_dir)
    models.mkdir(parents=True, exist_ok=True)
    s = replace(psettings, metrics_port=0)
    log = tmp_path / "producer.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "producer"], cwd=ROOT, env=settings_env(s),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: duty(db, "reconcile").get("runs", 0) >= 1), log.read_text()
        holder = lease_doc(db)["holder"]
        models.chmod(0)  # the volume denies this producer (EACCES), as a wrong owner or mode on a mount does
        assert wait_for(lambda: duty(db, "reconcile").get("failures", 0) >= 2), log.read_text()
        assert "PermissionError" in duty(db, "reconcile")["last_error"]
        renewed, runs = lease_doc(db)["expires_at"], duty(db, "requeue").get("runs", 0)
        assert wait_for(lambda: duty(db, "requeue").get("runs", 0) >= runs + 3)  # housekeeping goes on
        assert duty(db, "requeue")["failures"] == 0 and duty(db, "send")["failures"] == 0
        give(db, served[:25])  # and it still leads and acts: the first crossing is enqueued
        assert wait_for(lambda: db.training_jobs.count_documents({}) == 1), log.read_text()
        assert lease_doc(db)["holder"] == holder and lease_doc(db)["expires_at"] > renewed
        assert proc.poll() is None
        assert cli.main(["status"], s) == 0
        out = capsys.readouterr().out
        assert "reconcile: FAILING" in out and "Permission denied" in out, out
        models.chmod(0o755)  # fixed: the duty recovers by itself
        assert wait_for(lambda: duty(db, "reconcile").get("failures") == 0), log.read_text()
    finally:
        models.chmod(0o755)
        stop_worker(proc)
