"""Switching the champion (`eduranker.champion`) under concurrency: the registry keeps one champion."""

import subprocess
import sys
import threading

import pytest

from eduranker import champion
from eduranker.store import versions
from tests.celery_worker import ROOT
from tests.fake_versions import champion_link

RACER = """
import random, sys
from eduranker import champion
from eduranker.errors import EduRankerError
from eduranker.settings import Settings
from eduranker.store import connect
s = Settings(mongodb_url=sys.argv[1], mongodb_db=sys.argv[2], models_dir=sys.argv[3])
db, rng = connect(s), random.Random(sys.argv[4])
for _ in range(15):
    try:
        if rng.random() < 0.3:
            champion.rollback(db, s.models_dir, by="racer", reason="race")
        else:
            v = rng.choice(["v0001", "v0002", "v0003"])
            champion.promote(db, s.models_dir, v, by="racer", reason="race", expected_champion=rng.choice([..., None]))
    except EduRankerError:
        pass  # refused or stale: allowed outcomes of a race
"""


@pytest.mark.integration
def test_promotions_and_rollbacks_racing_from_several_processes_keep_one_champion(registry, settings):
    champion.promote(registry, settings.models_dir, "v0001", by="test", reason="start")
    seen, stop = [], threading.Event()

    def observe():
        while not stop.is_set():
            record = versions.read_champion(registry)
            statuses = registry.model_versions.count_documents({"status": "champion"})
            seen.append((record.version, statuses))

    observer = threading.Thread(target=observe)
    observer.start()
    args = [settings.mongodb_url, settings.mongodb_db, settings.models_dir]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, *args, str(i)], cwd=ROOT) for i in range(3)]
    try:
        assert [p.wait(120) for p in racers] == [0, 0, 0]
    finally:
        stop.set()
        observer.join()
    assert seen and all(version is not None and statuses <= 1 for version, statuses in seen)
    record = versions.read_champion(registry)
    assert champion_link(settings) == record.version
    assert [v["version"] for v in registry.model_versions.find({"status": "champion"})] == [record.version]
    assert record.chain[-1] == record.version
