"""What the producer's /metrics costs the database: commands per refresh at two data sizes, and commands
while Prometheus scrapes slowly or fast, side by side in one run against a local SecantusDB.

    .venv/bin/python bench/metrics_cost.py [--seconds 10]

The endpoint serves a cache refreshed every METRICS_REFRESH_SECONDS, so the commands follow the
refreshes, never the scrapes or the number of jobs and feedback.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from console.localservers import mongo_url, secantus_server
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes
from eduranker.store.connection import CommandCounter
from producer.metrics import MetricsCache
from producer.metrics_http import Endpoint


def seed(db, feedback: int, jobs: int) -> None:
    db.inferences.delete_many({})
    db.training_jobs.delete_many({})
    at = datetime.now(UTC) - timedelta(hours=1)
    db.inferences.insert_many([
        {"query_id": i % 97, "resource_id": i, "rank": 1, "feedback": "like" if i % 3 else "dislike",
         "feedback_at": at + timedelta(milliseconds=i), "created_at": at} for i in range(feedback)
    ])  # fmt: skip
    db.training_jobs.insert_many([
        {"_id": f"job-{i}", "status": "failed" if i % 4 == 0 else "rejected", "automatic": True,
         "created_at": at + timedelta(seconds=i), "finished_at": at + timedelta(seconds=i + 1),
         "timings": {"snapshot": 1.0, "train": 60.0}, "trigger": {"watermark": at}} for i in range(jobs)
    ])  # fmt: skip


def per_refresh(cache: MetricsCache) -> tuple[int, float]:
    """(commands, seconds) of one refresh."""
    began = time.perf_counter()
    assert cache.refresh(), "refresh failed"
    return cache.last_commands, time.perf_counter() - began


def scraped(cache: MetricsCache, settings: Settings, rate_hz: float, seconds: float) -> tuple[int, int, int]:
    """(scrapes, refreshes, database commands) while scraping at `rate_hz` for `seconds`."""
    endpoint = Endpoint(cache, settings, watching=lambda: True, host="127.0.0.1").start()
    url = f"http://127.0.0.1:{endpoint.port}/metrics"
    before, refreshes, scrapes = cache.commands.total, cache.refreshes, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        urllib.request.urlopen(url, timeout=10).read()
        scrapes += 1
        time.sleep(1 / rate_hz)
    endpoint.stop()
    for thread in endpoint.threads:
        thread.join(timeout=30)
    return scrapes, cache.refreshes - refreshes, cache.commands.total - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each scraping run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = secantus_server(Path(tmp) / "db").start()
        try:
            settings = Settings(mongodb_url=mongo_url(server.port), mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
                                models_dir=tmp, metrics_port=0, metrics_refresh_seconds=1.0)  # fmt: skip
            counter = CommandCounter()
            db = connect(settings, listeners=[counter])
            ensure_indexes(db)
            cache = MetricsCache(db, settings, "bench", commands=counter)
            seed(db, feedback=200, jobs=10)
            small = per_refresh(cache)
            seed(db, feedback=20_000, jobs=2_000)
            large = per_refresh(cache)
            print(f"commands per refresh: {small[0]} (200 feedback, 10 jobs; {small[1]:.2f} s) vs {large[0]} "
                  f"(20,000 feedback, 2,000 jobs; {large[1]:.2f} s): ratio {large[0] / small[0]:.2f}")  # fmt: skip
            seed(db, feedback=200, jobs=10)
            for rate in (1.0, 50.0):
                n, refreshes, commands = scraped(cache, settings, rate, args.seconds)
                print(f"scraping at {rate:g}/s for {args.seconds:g} s: {n} scrapes, {refreshes} refreshes, "
                      f"{commands} commands = {commands / max(1, refreshes):.1f} per refresh, "
                      f"{commands / max(1, n):.2f} per scrape")  # fmt: skip
            db.client.drop_database(settings.mongodb_db)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
