"""The guard's decisions act only on what they judged, and only under the lease they were judged in:
real SecantusDB, real processes paused with SIGSTOP after judging and before switching."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from eduranker import champion
from eduranker.errors import ChampionChanged
from eduranker.store import ensure_indexes, versions
from eduranker.store.lease import Lease, LeaseLapsed, fenced
from eduranker.store.online import GUARD_STATE_ID
from tests.celery_worker import PATIENCE, ROOT, settings_env
from tests.fake_versions import champion_link, make_version
from tests.test_online_guard import _serve

LOSING = ["v0003", "v0002", "v0002", "v0003"]  # interleaved: v0003's documents drew fewer likes


def wait_for(predicate, timeout=60.0, interval=0.05):
    deadline = time.monotonic() + timeout * PATIENCE
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    return None


def stopped(proc: subprocess.Popen) -> bool:
    """The process is paused (SIGSTOP): state T in /proc."""
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def spawn(settings, mode: str, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "tests.paused_guard", mode], cwd=ROOT, env=settings_env(settings),
                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def run_paused(settings, mode: str, log: Path, meanwhile) -> str:
    """`tests.paused_guard MODE` in its own process, stopped (SIGSTOP) at its first write after judging;
    `meanwhile()` runs while it is stopped; then it is resumed and must exit 0. Returns its log."""
    proc = spawn(settings, mode, log)
    try:
        assert wait_for(lambda: stopped(proc) or proc.poll() is not None), f"{mode} never reached its write"
        assert stopped(proc), log.read_text()
        meanwhile()
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(60 * PATIENCE) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
    return log.read_text()


@pytest.fixture()
def three_champions(db, settings):
    """v0001 → v0002 → v0003 promoted, v0004 registered; interleaved feedback on which v0003 clearly
    loses to v0002 (the guard's decision: roll back)."""
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003", "v0004"):
        make_version(settings.models_dir, v)
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}", "metrics": {"before": {}, "after": {}}})
    for v in ("v0001", "v0002", "v0003"):
        champion.promote(db, settings.models_dir, v, by="test", reason="test")
    promoted = versions.get_version(db, "v0003")["promoted_at"]
    rates = {"v0003": 0.3, "v0002": 0.7}
    _serve(db, promoted + timedelta(seconds=1), np.random.default_rng(7), versions_of=LOSING, like_rate=rates,
           users=130, searches=2)  # fmt: skip
    return versions.read_champion(db)


def _marked(db, version):
    doc = versions.get_version(db, version)
    return {k: doc[k] for k in ("guard_rolled_back", "guard_decision", "guard_decisions") if k in doc}


@pytest.mark.integration
def test_a_rollback_judged_before_another_promotion_changes_nothing(db, settings, three_champions, tmp_path):
    """Row 1: the refresh, in its own process, judged v0003 worse than v0002 and is paused before its
    switch; v0004 is promoted meanwhile. Resumed, it drops its decision: v0004 stays champion and no
    version is marked."""

    def by_hand() -> None:
        champion.promote(db, settings.models_dir, "v0004", by="cli", reason="an operator's promotion")

    log = run_paused(settings, "refresh", tmp_path / "refresh.log", by_hand)
    assert "decision: champion worse with users" in log, log  # it did judge v0003 worse
    record = versions.read_champion(db)
    assert record.version == "v0004" and record.chain == ["v0001", "v0002", "v0003", "v0004"]
    assert record.seq == three_champions.seq + 1 and champion_link(settings) == "v0004"
    assert versions.get_version(db, "v0004")["status"] == "champion"
    assert versions.get_version(db, "v0003")["status"] == "retired"
    for v in ("v0001", "v0002", "v0003", "v0004"):
        assert _marked(db, v) == {}, v
    guard = db.producer_state.find_one({"_id": GUARD_STATE_ID})
    assert guard["dropped_decisions"] == 1 and "v0003 vs v0002" in guard["last_dropped"]["reason"]
    assert "dropped its rollback decision on v0003 vs v0002" in log


@pytest.mark.integration
def test_one_judged_record_rolls_back_once(db, settings, three_champions):
    """Row 1: a decision applied twice (a retried duty) walks the chain one step, not two."""
    record = three_champions
    assert champion.rollback(db, settings.models_dir, by="online guard", reason="t", seen=record) == ("v0003", "v0002")
    with pytest.raises(ChampionChanged):
        champion.rollback(db, settings.models_dir, by="online guard", reason="t", seen=record)
    now = versions.read_champion(db)
    assert now.version == "v0002" and now.chain == ["v0001", "v0002"] and now.seq == record.seq + 1
    assert versions.get_version(db, "v0001")["status"] == "retired"


@pytest.mark.integration
def test_each_acquisition_starts_a_term_and_a_fenced_write_needs_the_current_one(db):
    """Row 2: a renewal keeps the term, a takeover bumps it; a write fenced by an earlier term (or an
    expired lease) is not made."""
    a, b = Lease(db, "a", 1.0), Lease(db, "b", 1.0)
    assert a.acquire() and a.term == 1 and not b.acquire()
    assert a.acquire() and a.term == 1  # renewed
    old = a.fence()
    assert fenced(db, old, lambda s: db.marks.insert_one({"by": "a"}, session=s).acknowledged)
    assert wait_for(b.acquire, timeout=10, interval=0.2) and b.term == 2  # after a's lease expired
    with pytest.raises(LeaseLapsed):
        fenced(db, old, lambda s: db.marks.insert_one({"by": "a, stale"}, session=s))
    assert [m["by"] for m in db.marks.find()] == ["a"]
    assert fenced(db, b.fence(), lambda s: db.marks.insert_one({"by": "b"}, session=s).acknowledged)


@pytest.mark.integration
def test_a_leader_paused_past_its_lease_does_not_switch_after_a_standby_took_over(
    db, settings, three_champions, redis_url, tmp_path
):
    """Row 2: two producer processes. A judges v0003 worse and is paused before its switch, past its
    lease; B takes the lease over (a new term), judges the same and is paused before its switch; A is
    resumed while B's switch is still pending (the champion record unchanged, so only the lease can stop
    A). Exactly one rollback happens, made under B's term or later, never under A's."""
    s = replace(settings, producer_lease_seconds=2, online_refresh_seconds=1, train_min_feedback=1_000_000,
                celery_broker_url=f"{redis_url}/15")  # fmt: skip
    lease_doc = lambda: db.producer_state.find_one({"_id": "producer-lease"}) or {}  # noqa: E731
    a = spawn(s, "producer", tmp_path / "a.log")
    b = None
    try:
        assert wait_for(lambda: stopped(a)), (tmp_path / "a.log").read_text()
        first = lease_doc()
        b = spawn(s, "producer", tmp_path / "b.log")
        assert wait_for(lambda: stopped(b)), (tmp_path / "b.log").read_text()
        second = lease_doc()
        assert second["holder"] != first["holder"] and second["term"] > first["term"]
        assert versions.read_champion(db) == three_champions  # nobody has switched yet
        os.kill(a.pid, signal.SIGCONT)
        assert wait_for(lambda: (db.producer_state.find_one({"_id": GUARD_STATE_ID}) or {}).get("dropped_decisions"))
        os.kill(b.pid, signal.SIGCONT)
        # Whoever leads now switches once, then refreshes the new champion's figures.
        assert wait_for(lambda: versions.read_champion(db).version == "v0002"
                        and "online" in versions.get_version(db, "v0002"), timeout=90)  # fmt: skip
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            if proc is not None:
                try:
                    proc.wait(30 * PATIENCE)
                except subprocess.TimeoutExpired:
                    proc.kill()
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    record = db.champion.find_one({"_id": "current"})
    assert record["version"] == "v0002" and record["chain"] == ["v0001", "v0002"], logs
    assert record["seq"] == three_champions.seq + 1  # one switch
    assert record["fence"]["term"] > first["term"], record["fence"]  # not the paused leader's stale decision
    assert len(versions.get_version(db, "v0003")["guard_decisions"]) == 1
    assert versions.get_version(db, "v0002")["status"] == "champion" and _marked(db, "v0002") == {}
    assert "dropped its rollback decision on v0003 vs v0002" in (tmp_path / "a.log").read_text()
