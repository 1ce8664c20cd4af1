"""The producer's metrics: values as the database holds them, a bounded cost per refresh, the endpoint."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from console.localservers import mongo_url, secantus_server
from eduranker.settings import Settings, SettingsError
from eduranker.store import ensure_indexes
from eduranker.store.clock import server_now
from eduranker.store.connection import CommandCounter, connect
from eduranker.store.lease import Lease
from eduranker.store.monitoring import stage_histogram
from producer.metrics import DURATION_BUCKETS, MetricsCache, Reading, families, read
from producer.metrics_http import Endpoint, health, serve
from producer.state import save_state
from tests.celery_worker import PATIENCE

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def samples(metrics: list) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}


def value(metrics: list, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


@pytest.mark.parametrize(
    ("pointer", "champion", "mismatch"),
    [(None, None, 0.0), ("v0002", "v0002", 0.0), ("v0001", "v0002", 1.0), (None, "v0002", 1.0), ("v0002", None, 1.0)],
)
def test_pointer_mismatch_is_one_exactly_when_the_pointer_and_the_registry_disagree(pointer, champion, mismatch):
    r = Reading(at=T0, pointer=pointer, champion={"version": champion} if champion else {})
    assert value(families(r, "me"), "eduranker_champion_pointer_mismatch") == mismatch


@pytest.mark.parametrize(
    ("holder", "expires_in_s", "leader", "held"),
    [("me", 10, 1.0, 1.0), ("other", 10, 0.0, 1.0), ("me", -1, 0.0, 0.0), (None, None, 0.0, 0.0)],
)
def test_leadership_reads_the_lease_on_the_servers_clock(holder, expires_in_s, leader, held):
    lease = {} if holder is None else {"holder": holder, "expires_at": T0 + timedelta(seconds=expires_in_s)}
    fams = families(Reading(at=T0, lease=lease), "me")
    assert value(fams, "eduranker_producer_leader") == leader
    assert value(fams, "eduranker_producer_lease_held") == held
    assert value(fams, "eduranker_producer_info", holder="me", role="leader" if leader else "standby") == 1.0


@pytest.mark.integration
def test_stage_durations_are_a_cumulative_histogram_grouped_on_the_server(db, settings):
    db.training_jobs.insert_many([
        {"_id": "a", "timings": {"snapshot": 2.0, "train": 100.0}},
        {"_id": "b", "timings": {"snapshot": 20.0, "train": 700.0, "odd": "not a number"}},
        {"_id": "c", "status": "queued"},
    ])  # fmt: skip
    fams = families(Reading(at=T0, durations=stage_histogram(db, DURATION_BUCKETS)), "me")
    assert value(fams, "eduranker_job_duration_seconds_bucket", stage="snapshot", le="5") == 1
    assert value(fams, "eduranker_job_duration_seconds_bucket", stage="snapshot", le="30") == 2
    assert value(fams, "eduranker_job_duration_seconds_bucket", stage="train", le="600") == 1
    assert value(fams, "eduranker_job_duration_seconds_bucket", stage="train", le="+Inf") == 2
    assert value(fams, "eduranker_job_duration_seconds_count", stage="total") == 2
    assert value(fams, "eduranker_job_duration_seconds_sum", stage="total") == pytest.approx(822.0)
    assert value(fams, "eduranker_job_duration_seconds_count", stage="odd") is None


def test_online_counts_come_from_the_champions_live_summary_by_arm():
    online = {
        "version": "v0002",
        "feedback": 30,
        "likes": 20,
        "holdback": {"version": "v0001", "feedback": 8, "likes": 2},
    }
    others = {"version": "v0001", "online": {"feedback": 99}}
    r = Reading(at=T0, champion={"version": "v0002"}, versions=[{"version": "v0002", "online": online}, others])
    fams = families(r, "me")
    assert value(fams, "eduranker_online_feedback_total", version="v0002", arm="champion") == 30
    assert value(fams, "eduranker_online_likes_total", version="v0001", arm="previous") == 2
    assert value(fams, "eduranker_online_feedback_total", version="v0001", arm="champion") is None


def _seed(db, *, jobs_count: int, feedback: int) -> None:
    ensure_indexes(db)
    at = server_now(db)
    db.inferences.insert_many([
        {"query_id": i, "resource_id": i, "rank": 1, "feedback": "like" if i % 3 else "dislike",
         "feedback_at": at - timedelta(seconds=feedback - i), "created_at": at - timedelta(hours=1)}
        for i in range(feedback)
    ])  # fmt: skip
    statuses = ["failed", "rejected", "succeeded"]
    db.training_jobs.insert_many([
        {"_id": f"job-{i}", "status": statuses[i % 3], "created_at": at - timedelta(minutes=jobs_count - i),
         "finished_at": at - timedelta(minutes=jobs_count - i - 0.5), "timings": {"snapshot": 1.5, "train": 30.0},
         "trigger": {"watermark": at - timedelta(seconds=feedback // 2)}, "automatic": True}
        for i in range(jobs_count)
    ])  # fmt: skip


@pytest.mark.integration
def test_a_refresh_reports_what_the_database_holds(db, settings):
    _seed(db, jobs_count=6, feedback=30)  # the newest job (job-5) succeeded, at watermark = 15 s before now
    db.training_jobs.insert_one({"_id": "job-6", "status": "failed", "created_at": server_now(db),
                                 "finished_at": server_now(db), "automatic": False})  # fmt: skip
    Lease(db, "me", 30).acquire()
    save_state(
        db,
        evaluated_at=server_now(db) - timedelta(seconds=40),
        duties={"reconcile": {"failures": 2, "failures_total": 5}},
    )
    os.makedirs(settings.models_dir)
    fams = families(read(db, settings, workers=lambda: 2), "me")
    assert value(fams, "eduranker_feedback_total", label="like") == 20
    assert value(fams, "eduranker_feedback_total", label="dislike") == 10
    assert value(fams, "eduranker_feedback_since_last_job") == 14  # set after the succeeded job's watermark
    assert value(fams, "eduranker_feedback_threshold") == settings.train_new_feedback
    assert value(fams, "eduranker_jobs", status="failed") == 3
    assert value(fams, "eduranker_jobs", status="succeeded") == 2
    assert value(fams, "eduranker_job_failures_in_a_row") == 1
    assert value(fams, "eduranker_job_duration_seconds_count", stage="train") == 6
    assert value(fams, "eduranker_producer_leader") == 1
    assert 40 <= value(fams, "eduranker_producer_lag_seconds") < 40 + 60  # 60: a safety net, not a speed claim
    assert value(fams, "eduranker_housekeeping_errors_total", step="reconcile") == 5
    assert value(fams, "eduranker_housekeeping_failing", step="reconcile") == 1
    assert value(fams, "eduranker_workers_alive") == 2
    volume = os.statvfs(settings.models_dir)
    assert value(fams, "eduranker_models_dir_size_bytes") == volume.f_blocks * volume.f_frsize
    assert value(fams, "eduranker_champion_pointer_mismatch") == 0  # no champion, no pointer


@pytest.mark.integration
def test_the_commands_per_refresh_do_not_grow_with_the_data(db, settings):
    counter = CommandCounter()
    counted = connect(settings, listeners=[counter])
    cache = MetricsCache(counted, settings, "me", commands=counter)
    _seed(db, jobs_count=3, feedback=10)
    assert cache.refresh()
    small = cache.last_commands
    db.training_jobs.delete_many({})
    db.inferences.delete_many({})
    _seed(db, jobs_count=300, feedback=3000)
    assert cache.refresh()
    assert cache.last_commands == small
    counted.client.close()


@pytest.mark.integration
def test_the_endpoint_serves_metrics_health_and_readiness(db, settings):
    counter = CommandCounter()
    cache = MetricsCache(connect(settings, listeners=[counter]), settings, "me", commands=counter)
    endpoint = Endpoint(cache, replace(settings, metrics_port=0), watching=lambda: False, host="127.0.0.1")
    endpoint.start()
    base = f"http://127.0.0.1:{endpoint.port}"
    try:
        _wait_until(lambda: cache.refreshes > 0)
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"eduranker_feedback", "eduranker_jobs", "eduranker_database_up"} <= names
        assert json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())["database_reachable"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # neither leading nor behind a live leader
            urllib.request.urlopen(f"{base}/readyz", timeout=10)
        assert refused.value.code == 503
        Lease(db, "someone-else", 60).acquire()
        cache.refresh()
        assert json.loads(urllib.request.urlopen(f"{base}/readyz", timeout=10).read())["standby"] is True
    finally:
        endpoint.stop()
        cache.db.client.close()


def test_health_fails_before_any_refresh_reached_the_database():
    cache = MetricsCache(None, Settings(), "me")  # type: ignore[arg-type]  # never refreshed: no database needed
    assert health(cache, 30.0)[0] == 503


def _wait_until(predicate, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout * PATIENCE
    while not predicate():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("name", "raw"), [("METRICS_PORT", "70000"), ("METRICS_PORT", "-1"), ("METRICS_REFRESH_SECONDS", "0")]
)
def test_a_bad_metrics_setting_is_refused_naming_it(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


@pytest.mark.integration
def test_a_taken_port_leaves_the_producer_without_an_endpoint_not_without_its_work(settings, redis_url):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        s = replace(settings, metrics_port=taken.getsockname()[1], celery_broker_url=f"{redis_url}/0")
        assert serve(s, "me", watching=lambda: True) is None
    assert serve(replace(s, metrics_port=0), "me", watching=lambda: True) is None  # 0: off


def test_every_job_status_is_exported_zero_when_no_job_has_it():
    fams = families(Reading(at=T0, jobs={"failed": (2, T0)}), "me")
    assert value(fams, "eduranker_jobs", status="failed") == 2
    assert value(fams, "eduranker_jobs", status="running") == 0
    assert value(fams, "eduranker_job_last_finished_timestamp_seconds", status="failed") == T0.timestamp()
    assert value(fams, "eduranker_job_last_finished_timestamp_seconds", status="running") is None


@pytest.mark.integration
def test_a_stopped_database_turns_health_and_database_up_off_and_keeps_the_last_figures(tmp_path):
    server = secantus_server(tmp_path / "own").start()  # this test's own server, to be stopped
    try:
        s = Settings(mongodb_url=mongo_url(server.port), mongodb_db="health", models_dir=str(tmp_path))
        counter = CommandCounter()
        cache = MetricsCache(connect(s, timeout_ms=1000, listeners=[counter]), s, "me", commands=counter)
        assert cache.refresh()
        assert health(cache, 3600.0)[0] == 200
        server.stop()
        assert not cache.refresh()
        fams = list(cache.collect())
        assert value(fams, "eduranker_database_up") == 0
        assert value(fams, "eduranker_jobs", status="failed", index="default") == 0  # the last figures are still served
        assert value(fams, "eduranker_metrics_refresh_errors_total") == 1
        assert health(cache, 0.0)[0] == 503  # the last refresh that reached it is older than allowed
        cache.db.client.close()
    finally:
        server.stop()
