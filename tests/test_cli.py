"""The `eduranker` CLI against real servers, on a registry prepared without training."""

import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from console import cli
from eduranker.store import jobs, versions
from tests.celery_worker import ROOT
from tests.fake_versions import champion_link


@pytest.mark.integration
def test_promote_and_rollback_move_the_champion_and_its_path(registry, settings, capsys):
    assert cli.main(["promote", "v0001"], settings) == 0
    assert cli.main(["promote", "v0003"], settings) == 0
    assert champion_link(settings) == "v0003"
    assert cli.main(["rollback"], settings) == 0
    assert "champion: v0001 (rolled back from v0003)" in capsys.readouterr().out
    assert champion_link(settings) == "v0001"
    assert registry.model_versions.count_documents({"status": "champion"}) == 1
    assert cli.main(["rollback"], settings) == 1  # v0001 has no predecessor
    assert "no previous champion" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("version", ["v0099", "../../etc", "v0001/../v0002", "latest"])
def test_unknown_or_escaping_versions_are_refused(registry, settings, capsys, version):
    assert cli.main(["promote", version], settings) == 1
    assert cli.main(["report", version], settings) == 1
    assert "error:" in capsys.readouterr().err
    assert registry.model_versions.count_documents({"status": "champion"}) == 0


@pytest.mark.integration
def test_versions_table_and_report(registry, settings, capsys):
    cli.main(["promote", "v0002"], settings)
    capsys.readouterr()
    assert cli.main(["versions"], settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["version", "status", "roc_auc"]
    assert lines[2].split()[:4] == ["v0002", "champion", "0.750", "+0.250"]
    assert cli.main(["report", "v0003"], settings) == 0
    assert capsys.readouterr().out == "report of v0003\n"


@pytest.mark.integration
def test_status_shows_counts_jobs_and_champion(registry, settings, capsys):
    registry.inferences.insert_many([{"feedback": f} for f in ["like"] * 3 + ["dislike"] * 2])
    jobs.create_job(registry, "j-queued", trigger={})
    cli.main(["promote", "v0001"], settings)
    assert cli.main(["status"], settings) == 0
    out = capsys.readouterr().out
    assert "feedback: 5 usable (like 3, dislike 2)" in out
    assert f"first model at {settings.train_min_feedback} feedbacks (5 so far); now: waiting: job j-queued" in out
    assert "jobs queued: 1, running: 0, waiting: 0" in out
    assert "champion: v0001" in out
    assert "champion -> v0001 (agrees)" in out


@pytest.mark.integration
def test_train_records_and_sends_a_job(db, settings, redis_url, capsys):
    s = replace(settings, celery_broker_url=f"{redis_url}/15")
    queue = redis.Redis.from_url(s.celery_broker_url)
    queue.flushdb()
    assert cli.main(["train", "--epochs", "1", "--reason", "operator"], s) == 0
    job_id = capsys.readouterr().out.strip()
    job = jobs.get_job(db, job_id)
    assert job["overrides"] == {"num_epochs": 1} and job["trigger"]["reason"] == "operator"
    assert job["sent_at"] is not None and queue.llen("training") == 1
    queue.flushdb()


@pytest.mark.integration
@pytest.mark.slow
def test_unreachable_database_exits_3(settings, capsys):
    s = replace(settings, mongodb_url="mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=300")
    assert cli.main(["versions"], s) == 3
    assert "cannot reach MongoDB" in capsys.readouterr().err


@pytest.mark.integration
def test_a_rejected_version_is_promoted_only_with_force_and_the_table_says_so(registry, settings, capsys):
    versions.set_status(registry, "v0002", versions.REJECTED, by="job-2", reason="gain within the noise")
    assert cli.main(["promote", "v0002"], settings) == 1
    assert "rejected by the gate" in capsys.readouterr().err
    assert versions.read_champion(registry).version is None
    assert cli.main(["promote", "v0002", "--force", "--reason", "hotfix"], settings) == 0
    capsys.readouterr()
    cli.main(["versions"], settings)
    out = capsys.readouterr().out
    assert "champion*" in out and "promoted with --force" in out
    last = versions.get_version(registry, "v0002")["history"][-1]
    assert (last["status"], last["by"], last["reason"], last["forced"]) == ("champion", "cli", "hotfix", True)


@pytest.mark.integration
def test_promote_and_rollback_refuse_missing_or_broken_artifacts_before_changing_anything(registry, settings, capsys):
    cli.main(["promote", "v0001"], settings)
    cli.main(["promote", "v0002"], settings)
    (Path(settings.models_dir) / "versions" / "v0003" / "model.safetensors").write_bytes(b"truncated")
    shutil.rmtree(Path(settings.models_dir) / "versions" / "v0001")
    capsys.readouterr()
    assert cli.main(["promote", "v0003"], settings) == 1
    assert "do not load" in capsys.readouterr().err
    assert cli.main(["rollback"], settings) == 1
    assert "no artifacts" in capsys.readouterr().err
    record = versions.read_champion(registry)
    assert (record.version, record.chain) == ("v0002", ["v0001", "v0002"])
    assert champion_link(settings) == "v0002"


KILLED_BETWEEN_WRITES = """
import os, signal, sys
from eduranker.settings import Settings
from eduranker.store import connect, versions
s = Settings(mongodb_url=sys.argv[1], mongodb_db=sys.argv[2], models_dir=sys.argv[3])
versions.record_promotion(connect(s), "v0003", by="doomed", reason="test")
os.kill(os.getpid(), signal.SIGKILL)  # before the pointer follows
"""


@pytest.mark.integration
def test_a_process_killed_between_registry_and_pointer_is_repaired_by_the_next_command(registry, settings, capsys):
    cli.main(["promote", "v0001"], settings)
    args = [settings.mongodb_url, settings.mongodb_db, settings.models_dir]
    done = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_WRITES, *args], cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL
    assert versions.read_champion(registry).version == "v0003"
    assert champion_link(settings) == "v0001"  # the API would still serve v0001
    capsys.readouterr()
    assert cli.main(["status"], settings) == 0
    assert "champion -> v0003 (agrees)" in capsys.readouterr().out
    assert champion_link(settings) == "v0003"


@pytest.mark.integration
def test_cancel_frees_the_slot_and_fences_out_the_running_run(registry, settings, capsys):
    jobs.create_job(registry, "j-run", trigger={})
    attempt = jobs.claim_job(registry, "j-run", worker="w", stale_after_s=60)["attempts"]
    assert jobs.create_job(registry, "j-next", trigger={}) == "waiting"
    assert cli.main(["cancel", "j-run", "--reason", "wrong data"], settings) == 0
    assert "cancelled j-run (was running)" in capsys.readouterr().out
    job = jobs.get_job(registry, "j-run")
    assert job["status"] == "cancelled" and job["reason"] == "wrong data" and "active" not in job
    assert not jobs.heartbeat(registry, "j-run", attempt)
    assert jobs.advance_waiting(registry) == "j-next"
    assert cli.main(["cancel", "j-run"], settings) == 1
    assert "only waiting, queued or running" in capsys.readouterr().err


def _play_a_job(db, job_id, seen):
    """A job's record as a worker moves it along: claimed, snapshot, two epochs, promoted. Each epoch
    waits until the watcher has printed the one before (`seen(text)`), so no machine is too slow."""
    attempt = jobs.claim_job(db, job_id, worker="w", stale_after_s=60)["attempts"]
    jobs.update_job(db, job_id, attempt, progress={"stage": "snapshot"})
    for epoch, step in ((1, 1), (1, 2), (2, 3), (2, 4)):
        if step % 2 == 1 and epoch > 1:
            seen(f"train epoch {epoch - 1}")
        progress = {"stage": "train", "epoch": epoch, "step": step, "total_steps": 4, "loss": 0.5}
        jobs.update_job(db, job_id, attempt, progress=progress)
    seen("train epoch 2")
    jobs.finish_job(db, job_id, attempt, jobs.SUCCEEDED, promoted=True, version="v0007", gate_reason="clear gain")


@pytest.mark.integration
def test_watch_prints_a_line_per_stage_and_epoch_off_a_terminal_then_the_outcome(registry, settings, capsys):
    jobs.create_job(registry, "j-watch", trigger={})
    printed: list[str] = []
    lock = threading.Lock()

    def seen(text: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                printed.append(capsys.readouterr().out)
                if text in "".join(printed):
                    return
            time.sleep(0.05)

    player = threading.Thread(target=_play_a_job, args=(registry, "j-watch", seen))
    player.start()
    assert cli.main(["watch", "j-watch"], settings) == 0
    player.join()
    with lock:
        printed.append(capsys.readouterr().out)
    lines = [line.strip() for line in "".join(printed).splitlines()]
    assert lines[-1] == "job j-watch: PROMOTED v0007: clear gain"
    assert "job j-watch: train epoch 1" in lines and "job j-watch: train epoch 2" in lines
    assert len([line for line in lines if "train" in line]) == 2  # one per epoch, not one per step
    assert cli.main(["watch", "nope"], settings) == 1


def test_on_a_terminal_a_job_is_a_progress_bar():
    import io

    from console.progress import JobView

    out = io.StringIO()
    view = JobView("j", out, bar=True)
    for step in range(1, 5):
        view.show({"status": "running", "progress": {"stage": "train", "epoch": 1, "step": step, "total_steps": 4,
                                                     "loss": 0.25}})  # fmt: skip
    view.show({"_id": "j", "status": "rejected", "version": "v0002", "reason": "gain within the noise"})
    text = out.getvalue()
    assert "4/4" in text and "epoch 1, loss 0.25" in text
    assert text.rstrip().endswith("job j: REJECTED v0002: gain within the noise")
