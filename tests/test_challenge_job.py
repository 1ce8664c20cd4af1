"""The challenger's way through real processes: a job whose candidate passes the screen becomes the
challenger (PROMOTION_MODE=interleave); a producer killed with -9 mid-challenge and restarted decides it
from what is stored, exactly once."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from console import demo
from eduranker import champion, models_dir
from eduranker.records import ChallengeOutcome
from eduranker.store import challenge, jobs, versions
from tests.challenge_traffic import write_interleaved
from tests.test_producer import _spawn_producer, wait_for
from worker.job import run_training_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_screened_first_model_becomes_the_challenger_of_the_base_model(db, settings):
    s = settings.with_overrides(promotion_mode="interleave")
    demo.seed_feedback(db, seed=1)
    jobs.create_job(db, "job-c", trigger={"reason": "test"})
    outcome = run_training_job(s, "job-c")
    assert outcome["status"] == "succeeded" and outcome["challenger"] and not outcome["promoted"]
    assert outcome["outcome"].startswith(f"CHALLENGER {outcome['version']}: users decide")
    version = versions.get_version(db, outcome["version"])
    assert version["status"] == "challenger" and version["gate"]["worse"] is False
    record, running = challenge.read(db)
    assert record.version is None and running is not None and running.against is None
    assert models_dir.champion_target(s.models_dir, "challenger") == outcome["version"]
    assert models_dir.champion_target(s.models_dir) is None  # the base model still serves
    job = jobs.get_job(db, "job-c")
    assert job["challenger"] and "passed the screen" in (job.get("reason") or "")


def test_a_producer_killed_mid_challenge_decides_it_once_restarted(registry, settings, redis_url, tmp_path):
    s = replace(settings, promotion_mode="interleave", producer_lease_seconds=2, online_refresh_seconds=1,
                celery_broker_url=f"{redis_url}/15", metrics_port=0)  # fmt: skip
    champion.promote(registry, s.models_dir, "v0001", by="test", reason="first")
    champion.start_challenge(registry, s.models_dir, "v0002", against="v0001", by="test", reason="screened")
    log = open(tmp_path / "producer.log", "ab")  # noqa: SIM115
    # Too few users yet: the producer judges, stores its figures, and waits.
    write_interleaved(registry, "v0001", "v0002", users=60, p_challenger=0.85, p_champion=0.25, seed=1)
    proc = _spawn_producer(s, log)
    try:
        assert wait_for(lambda: "figures" in (versions.get_version(registry, "v0002").get("challenge") or {}), 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # More users while no producer runs; the next producer leads once the lease lapses, and decides.
        write_interleaved(registry, "v0001", "v0002", users=100, p_challenger=0.85, p_champion=0.25, seed=2)
        assert challenge.read(registry)[1] is not None  # nobody decided while none ran
        proc = _spawn_producer(s, log)
        assert wait_for(lambda: challenge.read(registry)[1] is None, 90)
        time.sleep(2 * s.online_refresh_seconds)  # further looks change nothing: the challenge is over
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    record, _ = challenge.read(registry)
    assert record.version == "v0002" and record.chain == ["v0001", "v0002"]
    ended = versions.get_version(registry, "v0002")["challenge"]
    assert ended["outcome"] == ChallengeOutcome.PROMOTED and ended["figures"]["users"][0] >= 100
    promotions = [h for h in versions.get_version(registry, "v0002")["history"] if h.get("status") == "champion"]
    assert len(promotions) == 1 and promotions[0]["by"] == "challenge"
    assert models_dir.champion_target(s.models_dir) == "v0002"
