"""Promotion and pruning cannot interleave: real processes paused with SIGSTOP at the two windows where
a prune could delete the folder of a version being promoted (docs/retention.md)."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from eduranker import champion, pruning
from eduranker.store import ensure_indexes, versions
from eduranker.store.clock import server_now
from tests.celery_worker import PATIENCE, ROOT, settings_env
from tests.fake_versions import champion_link, make_version

# An operator's `promote v0001`, stopping itself once: after its artifact check ("checked"), or after the
# registry's switch, before the statuses follow it ("switched").
PROMOTER = """
import os, signal, sys
from eduranker import champion, models_dir
from eduranker.settings import Settings
from eduranker.store import connect, versions

def once(real):
    calls = []
    def paused(*args, **kwargs):
        if not calls:
            calls.append(1)
            if sys.argv[1] == "checked":
                result = real(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGSTOP)
                return result
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(*args, **kwargs)
    return paused

if sys.argv[1] == "checked":
    models_dir.check_loadable = once(models_dir.check_loadable)
else:
    versions.sync_statuses = once(versions.sync_statuses)
s = Settings.from_env()
try:
    champion.promote(connect(s), s.models_dir, "v0001", by="cli", reason="by hand", force=True)
    print("promoted", flush=True)
except Exception as exc:
    print(f"refused: {type(exc).__name__}: {exc}", flush=True)
"""

# A prune pass that stops itself once it has chosen, before its first mark.
PRUNER = """
import json, os, signal
from datetime import timedelta
from eduranker import pruning
from eduranker.settings import Settings
from eduranker.store import connect
from eduranker.store import retention as store
from eduranker.store.clock import server_now

real, calls = store.mark_pruned, []
def paused(*args, **kwargs):
    if not calls:
        calls.append(1)
        os.kill(os.getpid(), signal.SIGSTOP)
    return real(*args, **kwargs)
store.mark_pruned = paused
s = Settings.from_env()
db = connect(s)
print(json.dumps(pruning.prune(db, s, now=server_now(db) + timedelta(days=1), by="test").as_dict()), flush=True)
"""


def _start(script: str, settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=settings_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _stopped(proc: subprocess.Popen) -> None:
    """Wait until the process has stopped itself (state T in /proc); it must not have exited."""
    deadline = time.monotonic() + 60 * PATIENCE
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the process never reached its pause")


def _resume(proc: subprocess.Popen) -> str:
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120 * PATIENCE)
    assert proc.returncode == 0, err
    return out.strip()


@pytest.fixture()
def retired_v1(db, settings):
    """v0001 → v0002 → v0003 promoted in turn: v0001 is retired and old enough to prune."""
    ensure_indexes(db)
    s = settings.with_overrides(retain_versions=1, retain_champions=2, retain_days=0.0)
    for i in range(1, 4):
        version = versions.allocate_version(db)
        make_version(s.models_dir, version)
        versions.insert_version(db, {"version": version, "job_id": f"job-{i}", "artifact_path": f"versions/{version}",
                                     "metrics": {"before": {}, "after": {"roc_auc": 0.8}}})  # fmt: skip
        champion.promote(db, s.models_dir, version, by="test", reason="better")
    assert versions.get_version(db, "v0001")["status"] == versions.RETIRED
    return s


@pytest.mark.integration
def test_a_prune_between_the_artifact_check_and_the_switch_makes_the_promotion_refuse(db, retired_v1):
    s = retired_v1
    promoter = _start(PROMOTER, s, "checked")
    try:
        _stopped(promoter)  # v0001's artifacts were checked; the switch has not happened
        report = pruning.prune(db, s, now=server_now(db) + timedelta(days=1), by="test")
        assert report.pruned == ["v0001"] and not (Path(s.models_dir) / "versions" / "v0001").exists()
        out = _resume(promoter)
    finally:
        promoter.kill()
    assert out.startswith("refused: VersionUnusable: v0001: its folder was pruned"), out
    record = versions.read_champion(db)
    assert record.version == "v0003" and champion_link(s) == "v0003"  # the registry never named v0001
    assert versions.get_version(db, "v0001")["status"] == versions.RETIRED
    assert champion.pointer_problem(db, s.models_dir) is None


@pytest.mark.integration
def test_a_prune_that_marks_between_the_switch_and_the_status_sync_is_refused(db, retired_v1):
    s = retired_v1
    pruner = _start(PRUNER, s)
    promoter = None
    try:
        _stopped(pruner)  # it read the champion record (v0003) and chose v0001
        promoter = _start(PROMOTER, s, "switched")
        _stopped(promoter)  # the record names v0001; its status is still `retired`
        assert versions.read_champion(db).version == "v0001"
        assert versions.get_version(db, "v0001")["status"] == versions.RETIRED
        report = json.loads(_resume(pruner))
        assert _resume(promoter) == "promoted"
    finally:
        for proc in (pruner, promoter):
            if proc is not None:
                proc.kill()
    assert report["pruned"] == [] and report["refused"] == ["v0001"], report
    doc = versions.get_version(db, "v0001")
    assert doc["status"] == versions.CHAMPION and "artifacts" not in doc
    assert (Path(s.models_dir) / "versions" / "v0001").is_dir() and champion_link(s) == "v0001"
    assert champion.pointer_problem(db, s.models_dir) is None
    # The next pass prunes what is prunable now, and never the champion.
    later = pruning.prune(db, s, now=server_now(db) + timedelta(days=1), by="test")
    assert "v0001" not in later.pruned and champion_link(s) == "v0001"


@pytest.mark.integration
def test_a_champion_without_its_folder_is_reported_by_status_and_reconcile_goes_on(db, retired_v1, capsys):
    """A folder deleted by hand: the pointer does not dangle, `status` names the problem, reconcile goes on."""
    import shutil

    from console import cli

    s = retired_v1
    shutil.rmtree(Path(s.models_dir) / "versions" / "v0003")
    champion.reconcile(db, s.models_dir, by="test")  # no exception, every time
    champion.reconcile(db, s.models_dir, by="test")
    assert cli.main(["status"], s) == 0
    out = capsys.readouterr().out
    assert "PROBLEM: the pointer" in out and "dangles" in out, out
    assert champion.pointer_problem(db, s.models_dir) is not None
