"""The `eduranker` CLI against real servers, on a registry prepared without training."""

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from eduranker import cli
from eduranker.pipeline.artifacts import staged_version_dir
from eduranker.store import ensure_indexes, jobs, versions


@pytest.fixture()
def registry(db, settings):
    ensure_indexes(db)
    for i, auc in enumerate((0.70, 0.75, 0.80), start=1):
        version = f"v{i:04d}"
        with staged_version_dir(settings.models_dir, version) as folder:
            (folder / "training_report.txt").write_text(f"report of {version}\n")
        versions.insert_version(db, {
            "version": version, "job_id": f"job-{i}", "artifact_path": f"versions/{version}",
            "metrics": {"before": {"roc_auc": 0.5}, "after": {"roc_auc": auc, "ndcg@10": 0.9, "mrr": 0.8, "f1": 0.7}},
            "snapshot": {"pairs": 100 * i},
        })  # fmt: skip
    return db


def champion_link(settings):
    return (Path(settings.models_dir) / "champion").resolve().name


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


@pytest.mark.parametrize("version", ["v0099", "../../etc", "v0001/../v0002", "latest"])
def test_unknown_or_escaping_versions_are_refused(registry, settings, capsys, version):
    assert cli.main(["promote", version], settings) == 1
    assert cli.main(["report", version], settings) == 1
    assert "error:" in capsys.readouterr().err
    assert registry.model_versions.count_documents({"status": "champion"}) == 0


def test_versions_table_and_report(registry, settings, capsys):
    cli.main(["promote", "v0002"], settings)
    capsys.readouterr()
    assert cli.main(["versions"], settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["version", "status", "roc_auc"]
    assert lines[2].split()[:4] == ["v0002", "champion", "0.750", "+0.250"]
    assert cli.main(["report", "v0003"], settings) == 0
    assert capsys.readouterr().out == "report of v0003\n"


def test_status_shows_counts_jobs_and_champion(registry, settings, capsys):
    registry.inferences.insert_many([{"feedback": f} for f in ["like"] * 3 + ["dislike"] * 2])
    jobs.create_job(registry, "j-queued", trigger={})
    cli.main(["promote", "v0001"], settings)
    assert cli.main(["status"], settings) == 0
    out = capsys.readouterr().out
    assert "feedback: 5 usable (like 3, dislike 2)" in out
    assert f"first model at {settings.train_min_feedback} feedbacks" in out
    assert "jobs queued: 1, running: 0" in out
    assert "champion: v0001" in out


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


def test_unreachable_database_exits_3(settings, capsys):
    s = replace(settings, mongodb_url="mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=300")
    assert cli.main(["versions"], s) == 3
    assert "cannot reach MongoDB" in capsys.readouterr().err


def test_concurrent_promotions_leave_exactly_one_champion(registry, settings):
    errors = []

    def promote(version):
        try:
            for _ in range(10):
                versions.promote(registry, version)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("v0001", "v0002", "v0003")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert registry.model_versions.count_documents({"status": "champion"}) == 1
