"""Retention: the pure choice of folders to prune, and prune passes against a real registry and volume."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eduranker.pruning import RetentionRule, VersionView, prune, to_prune

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


def _views(*specs):
    return [VersionView(f"v{i:04d}", status, when, pruned) for i, (status, when, pruned) in enumerate(specs, 1)]


RULE = RetentionRule(keep_champions=2, keep_newest=2, min_age=timedelta(days=14))


@pytest.mark.parametrize(
    ("specs", "chain", "protected", "expected"),
    [
        # Old rejected and retired go; the two newest stay whatever their status.
        ([("rejected", OLD, False), ("retired", OLD, False), ("rejected", OLD, False), ("rejected", OLD, False)],
         [], set(), ["v0001", "v0002"]),
        # Young rejected folders stay (RETAIN_DAYS).
        ([("rejected", NOW - timedelta(days=3), False), ("rejected", OLD, False), ("x", OLD, False), ("x", OLD, False)],
         [], set(), ["v0002"]),
        # The chain's last two champions and the protected stay; a candidate is never pruned.
        ([("retired", OLD, False), ("retired", OLD, False), ("retired", OLD, False), ("candidate", OLD, False),
          ("rejected", OLD, False), ("rejected", OLD, False), ("rejected", OLD, False)],
         ["v0001", "v0002", "v0003"], {"v0005"}, ["v0001"]),
        # Already pruned: nothing more to choose; a version without a registration time is kept.
        ([("rejected", OLD, True), ("rejected", None, False), ("rejected", OLD, False), ("rejected", OLD, False)],
         [], set(), []),
        ([("rolled_back", OLD, False), ("champion", OLD, False), ("x", OLD, False), ("x", OLD, False)],
         [], set(), ["v0001"]),
    ],
)  # fmt: skip
def test_what_retention_prunes(specs, chain, protected, expected):
    assert to_prune(_views(*specs), chain, protected, RULE, NOW) == expected


def _folders(settings) -> set[str]:
    return {p.name for p in (Path(settings.models_dir) / "versions").iterdir()}


def _register(db, settings, i: int, promote: bool) -> str:
    from eduranker import champion
    from eduranker.store import versions
    from tests.fake_versions import make_version

    version = versions.allocate_version(db)
    make_version(settings.models_dir, version)
    versions.insert_version(db, {"version": version, "job_id": f"job-{i}", "artifact_path": f"versions/{version}",
                                 "metrics": {"before": {}, "after": {"roc_auc": 0.8}}})  # fmt: skip
    if promote:
        champion.promote(db, settings.models_dir, version, by="test", reason="better")
    else:
        versions.set_status(db, version, versions.REJECTED, by="test", reason="no better")
    return version


@pytest.mark.integration
@pytest.mark.slow
def test_thirty_jobs_with_retention_keep_only_the_kept_folders_and_the_whole_registry(db, settings):
    from eduranker.models_dir import check_loadable
    from eduranker.store import ensure_indexes, versions
    from eduranker.store.clock import server_now
    from eduranker.store.connection import TRAINING_JOBS

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=5, retain_champions=2, retain_days=0.0)
    for i in range(1, 31):
        _register(db, s, i, promote=i % 3 == 1)  # a champion every third job, the others rejected
        report = prune(db, s, now=server_now(db) + timedelta(seconds=1))
        record = versions.read_champion(db)
        check_loadable(s.models_dir, record.version)  # the champion loads after every pass
        if record.previous:
            check_loadable(s.models_dir, record.previous)
        assert len(versions.list_versions(db)) == i  # the registry keeps every version
        assert not report.dry_run
    record = versions.read_champion(db)
    newest = {f"v{i:04d}" for i in range(26, 31)}
    assert record.version == "v0028" and record.previous == "v0025"
    assert _folders(s) == newest | set(record.chain[-2:])
    docs = {d["version"]: d for d in versions.list_versions(db)}
    assert {v for v, d in docs.items() if d.get("artifacts") == "pruned"} == set(docs) - _folders(s)
    assert all(d["history"][-1].get("artifacts") == "pruned" for v, d in docs.items() if v not in _folders(s))
    ttl = db[TRAINING_JOBS].index_information()["finished_jobs_expire"]
    assert ttl["expireAfterSeconds"] == int(s.job_retention_days * 86400)


@pytest.mark.integration
def test_a_dry_run_changes_nothing_and_an_active_job_protects_what_it_may_use(db, settings):
    from eduranker.store import ensure_indexes, jobs, versions
    from eduranker.store.clock import server_now

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    for i in range(1, 4):
        _register(db, s, i, promote=True)  # v0001 → v0002 → v0003: v0001 retired
    _register(db, s, 4, promote=False)
    later = server_now(db) + timedelta(seconds=1)
    dry = prune(db, s, now=later, dry_run=True)
    assert dry.pruned == ["v0001"] and dry.dry_run
    assert "v0001" in _folders(s) and "artifacts" not in versions.get_version(db, "v0001")

    # A running job created now may judge against (or warm-start from) any version retired after it.
    db["training_jobs"].insert_one({"_id": "running", "status": jobs.RUNNING, "created_at": server_now(db)})
    _register(db, s, 5, promote=True)  # v0003 retired while the job runs
    _register(db, s, 6, promote=True)  # v0005 previous; the chain's last two are v0005 and v0006
    assert versions.get_version(db, "v0003")["status"] == versions.RETIRED
    report = prune(db, s, now=server_now(db) + timedelta(seconds=1))
    assert report.pruned == ["v0001", "v0002", "v0004"]
    assert _folders(s) == {"v0003", "v0005", "v0006"}
    db["training_jobs"].delete_one({"_id": "running"})
    assert prune(db, s, now=server_now(db) + timedelta(seconds=1)).pruned == ["v0003"]


@pytest.mark.integration
def test_eduranker_prune_dry_run_prints_and_deletes_nothing_then_prunes(db, settings, capsys):
    from console import cli

    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    for i in range(1, 4):
        _register(db, s, i, promote=i < 3)  # v0001 retired, v0002 champion, v0003 rejected (the newest)
    assert cli.main(["prune", "--dry-run"], s) == 0
    assert "would prune: nothing" in capsys.readouterr().out  # v0001 is the previous champion
    _register(db, s, 4, promote=False)  # v0003 is no longer the newest
    assert cli.main(["prune", "--dry-run"], s) == 0
    assert "would prune: v0003" in capsys.readouterr().out and "v0003" in _folders(s)
    assert cli.main(["prune"], s) == 0
    assert "pruned: v0003" in capsys.readouterr().out and _folders(s) == {"v0001", "v0002", "v0004"}


# Two promotions by an operator whose host clock is ten minutes behind the database server's.
PROMOTE_BEHIND = """
import tests.skewed_clock
from eduranker import champion
from eduranker.settings import Settings
from eduranker.store import connect
s = Settings.from_env()
for version in ("v0005", "v0006"):
    champion.promote(connect(s), s.models_dir, version, by="cli", reason="by hand", force=True)
"""


@pytest.mark.integration
def test_a_version_retired_while_a_job_runs_stays_protected_whatever_the_retiring_hosts_clock(db, settings):
    """Version times are the server's: a retirement stamped by a host ten minutes behind would look older
    than the running job and lose the folder that job may judge against or warm-start from."""
    import subprocess
    import sys

    from eduranker.store import ensure_indexes, jobs, versions
    from eduranker.store.clock import server_now
    from tests.celery_worker import PATIENCE, ROOT, settings_env

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    for i in range(1, 4):
        _register(db, s, i, promote=True)  # v0003 champion
    for i in range(4, 7):
        _register(db, s, i, promote=False)
    jobs.create_job(db, "running", trigger={"reason": "test"})  # created on the server's clock
    env = {**settings_env(s), "SKEWED_CLOCK_SECONDS": "-600"}
    subprocess.run([sys.executable, "-c", PROMOTE_BEHIND], cwd=ROOT, env=env, check=True, timeout=120 * PATIENCE)

    retired = versions.get_version(db, "v0003")
    assert retired["status"] == versions.RETIRED
    assert retired["retired_at"] >= jobs.get_job(db, "running")["created_at"]
    report = prune(db, s, now=server_now(db) + timedelta(seconds=1))
    assert "v0003" not in report.pruned and "v0003" in _folders(s)
    assert report.pruned == ["v0001", "v0002", "v0004"]


def test_age_counts_from_when_a_version_stopped_serving_not_from_its_registration():
    recently = NOW - timedelta(hours=1)
    views = [
        VersionView("v0001", "rolled_back", OLD, False, retired_at=recently),  # a false rollback an hour ago
        VersionView("v0002", "retired", OLD, False, retired_at=NOW - timedelta(days=15)),
        VersionView("v0003", "retired", NOW - timedelta(days=3), False, retired_at=None),
        VersionView("v0004", "rejected", OLD, False),  # never served: its registration counts
    ]
    views += [VersionView("v0005", "x", OLD, False), VersionView("v0006", "x", OLD, False)]
    assert to_prune(views, [], set(), RULE, NOW) == ["v0002", "v0004"]


@pytest.mark.integration
def test_a_version_rolled_back_an_hour_ago_keeps_its_folder_however_old_its_registration(db, settings):
    from eduranker import champion
    from eduranker.store import ensure_indexes, versions
    from eduranker.store.clock import server_now

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=14.0)
    for i in range(1, 3):
        _register(db, s, i, promote=True)  # v0001 → v0002
    _register(db, s, 3, promote=False)  # the newest: kept whatever its age
    champion.rollback(db, s.models_dir, by="guard", reason="users liked it less")  # v0002 rolled back now
    registered = server_now(db) - timedelta(days=15)
    db["model_versions"].update_many({}, {"$set": {"created_at": registered}})
    assert versions.get_version(db, "v0002")["status"] == versions.ROLLED_BACK
    report = prune(db, s, now=server_now(db))
    assert report.pruned == [] and "v0002" in _folders(s)  # the rollback can still be undone
    assert prune(db, s, now=server_now(db) + timedelta(days=15)).pruned == ["v0002"]


@pytest.mark.integration
def test_one_bad_version_document_is_skipped_counted_and_shown_and_the_pass_goes_on(db, settings, capsys):
    from console import cli
    from eduranker.store import ensure_indexes
    from eduranker.store.clock import server_now

    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    for i in range(1, 4):
        _register(db, s, i, promote=i < 3)  # v0001 retired, v0002 champion, v0003 rejected (the newest)
    _register(db, s, 4, promote=False)  # v0003 prunable now
    old = server_now(db) - timedelta(days=30)
    db["model_versions"].insert_many([
        {"version": "v12", "status": "retired", "created_at": old, "retired_at": old},
        {"version": 7, "status": "rejected", "created_at": old},
        {"status": "rejected", "created_at": old},
        {"version": "v0099", "status": "rejected", "created_at": "last week"},
    ])  # fmt: skip
    report = prune(db, s, now=server_now(db) + timedelta(seconds=1))
    assert report.pruned == ["v0003"] and _folders(s) == {"v0001", "v0002", "v0004"}
    assert report.skipped == ["'v12': not a version name", "7: not a version name", "None: not a version name",
                              "v0099: created_at is not a date"]  # fmt: skip
    assert cli.main(["status"], s) == 0
    assert "retention: 4 version document(s) skipped" in capsys.readouterr().out
    assert cli.main(["prune"], s) == 0
    assert "skipped 4 version document(s): 'v12': not a version name" in capsys.readouterr().out
