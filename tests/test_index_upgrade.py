"""Upgrading in place: a database and models folder written in the layout of the release before
indexes (one search: `training_jobs`, `model_versions`, `champion`, ... and MODELS_DIR/versions) are the
default index's, read and extended by the new code with nothing moved, renamed or lost, also after a
second index is configured beside it."""

import json
import os
from pathlib import Path

import pytest

from console.cli import main as cli
from eduranker import models_dir
from eduranker.queue import make_celery
from eduranker.store import connect, jobs, versions
from eduranker.store.connection import CommandCounter
from producer.__main__ import leaders
from tests.trained_image import restore
from worker.job import run_training_job

# What the release before indexes wrote, and the new code keeps for the default index, name for name.
RELEASE_COLLECTIONS = {"champion", "counters", "evaluation_epochs", "model_versions", "training_jobs"}
SEARCH_API = {"inferences", "user_queries", "resources"}


def settled(value):
    """A document without the times a refresh rewrites (the live figures' `refreshed_at`)."""
    if isinstance(value, dict):
        return {k: settled(v) for k, v in value.items() if k != "refreshed_at"}
    return value


def layout(db, models: Path) -> dict:
    """Every document of every collection, and every file of the models folder (links as their targets)."""
    docs = {name: {str(d["_id"]): d for d in db[name].find()} for name in db.list_collection_names()}
    files = {}
    for root, dirs, names in os.walk(models):
        for name in dirs + names:
            path = Path(root) / name
            rel = str(path.relative_to(models))
            files[rel] = os.readlink(path) if path.is_symlink() else (path.stat().st_size if path.is_file() else "dir")
    return {"docs": docs, "files": files}


@pytest.mark.integration
@pytest.mark.slow
def test_todays_database_and_folder_are_the_default_index_and_upgrade_in_place(db, settings, trained_demo, redis_url):
    # 1. The release's layout: the trained image (a real job), then a producer's state and the guard's figures.
    restore(trained_demo, db, settings.models_dir)
    old = settings.with_overrides(celery_broker_url=f"{redis_url}/12", train_min_feedback=100)
    (producer,) = leaders(old, connect(old), make_celery(old), CommandCounter())
    assert producer.lease.acquire()
    producer.evaluate()
    producer.lease.release()  # the old release's producer stops (SIGTERM) before the new one starts
    assert set(db.list_collection_names()) - SEARCH_API == RELEASE_COLLECTIONS | {"producer_state", "retention_state"}
    before = layout(db, Path(settings.models_dir))

    # 2. The new code, with a second index configured beside the default one.
    new = old.with_overrides(indexes=json.dumps({"fr": {"owns": {"query.index": "fr"}}}))
    default = new.for_index("default")
    assert default.models_dir == settings.models_dir  # the default index's folder is MODELS_DIR, as before
    assert cli(["status"], settings=new) == 0 and cli(["indexes"], settings=new) == 0
    for each in leaders(new, connect(new), make_celery(new), CommandCounter()):
        assert each.lease.acquire()
        assert not each.evaluate().train  # nothing new: the default index remembers its last job's watermark
    assert versions.get_champion(connect(default))["version"] == "v0001"
    assert models_dir.champion_target(default.models_dir) == "v0001"
    after = layout(db, Path(settings.models_dir))
    for name, documents in before["docs"].items():  # nothing moved, renamed or lost
        for key, doc in documents.items():
            if name in ("producer_state", "retention_state"):  # rewritten by each pass of the new producer
                assert key in after["docs"][name]
                continue
            assert settled(after["docs"][name][key]) == settled(doc), (name, key)
    assert {k: v for k, v in after["files"].items() if k in before["files"]} == before["files"]
    new_collections = set(after["docs"]) - set(before["docs"])
    assert all(name.startswith("fr.") for name in new_collections), new_collections  # the new index's own

    # 3. The default index goes on from where it was: its counter, its champion, its epochs, its figures.
    jobs.create_job(connect(default), "after-upgrade", trigger={"reason": "test"}, overrides={"num_epochs": 1})
    outcome = run_training_job(default, "after-upgrade", worker_name="upgraded")
    assert outcome["version"] == "v0002"
    second = versions.get_version(connect(default), "v0002")
    assert second["parent_version"] == "v0001" and second["split"]["epoch"] == 1
    assert second["gate"]["fairness"]["champion_epochs"] == [1]  # judged against v0001 on its own epoch
    assert settled(versions.get_version(connect(default), "v0001")["online"]) == settled(
        before["docs"]["model_versions"][str(versions.get_version(connect(default), "v0001")["_id"])]["online"]
    )
    assert jobs.get_job(connect(default), "job-1")["status"] == before["docs"]["training_jobs"]["job-1"]["status"]
