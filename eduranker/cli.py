"""`eduranker`: status, versions, train, promote, rollback and report, over the store and the task name.

Exit codes: 0 ok, 1 the request cannot be done (unknown version, nothing to roll back), 2 usage,
3 a server is unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eduranker.errors import AccessDenied, RetryableError, UnknownVersion
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors, versions
from eduranker.store.connection import redact_url

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 3


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def cmd_status(db, settings: Settings, _args) -> int:
    from eduranker.store.feedback import count_usable_feedback
    from producer.policy import is_first_model
    from producer.watcher import last_job_view, read_counts, thresholds_from

    last = last_job_view(db)
    totals = count_usable_feedback(db)
    window = read_counts(db, last)
    th = thresholds_from(settings)
    print(f"feedback: {sum(totals.values())} usable (like {totals['like']}, dislike {totals['dislike']})")
    if is_first_model(last):
        to_go = max(th.min_feedback - window.total, 0)
        print(f"next trigger: first model at {th.min_feedback} feedbacks ({to_go} to go)")
    else:
        print(f"next trigger: {window.total}/{th.new_feedback} new feedbacks since job {last.job_id}")
    active = jobs.active_jobs(db)
    print(f"jobs queued: {sum(j['status'] == 'queued' for j in active)}, running: "
          f"{sum(j['status'] == 'running' for j in active)}")  # fmt: skip
    for job in active:
        progress = job.get("progress") or {}
        print(f"  {job['_id']} {job['status']} {progress.get('stage', '')}")
    champion = versions.get_champion(db)
    if champion:
        auc = champion["metrics"]["after"].get("roc_auc")
        print(f"champion: {champion['version']} (held-out ROC-AUC {_fmt(auc)})")
    else:
        print("champion: none (the base model serves)")
    return EXIT_OK


def cmd_versions(db, _settings, _args) -> int:
    rows = versions.list_versions(db)
    if not rows:
        print("no versions yet")
        return EXIT_OK
    columns = f"{'version':<9}{'status':<11}{'roc_auc':>9}{'Δ auc':>8}{'ndcg@10':>9}{'mrr':>7}{'f1':>7}"
    print(f"{columns}{'pairs':>7}  created")
    for v in rows:
        after, before = v.get("metrics", {}).get("after", {}), v.get("metrics", {}).get("before", {})
        gain = None
        if after.get("roc_auc") is not None and before.get("roc_auc") is not None:
            gain = after["roc_auc"] - before["roc_auc"]
        created = f"{v['created_at']:%Y-%m-%d %H:%M}" if v.get("created_at") else "-"
        print(
            f"{v['version']:<9}{v['status']:<11}{_fmt(after.get('roc_auc')):>9}"
            f"{('-' if gain is None else f'{gain:+.3f}'):>8}{_fmt(after.get('ndcg@10')):>9}"
            f"{_fmt(after.get('mrr')):>7}{_fmt(after.get('f1')):>7}{_fmt(v.get('snapshot', {}).get('pairs')):>7}"
            f"  {created}"
        )
    return EXIT_OK


def cmd_train(_db, settings: Settings, args) -> int:
    from producer.outbox import request_training

    given = {
        "num_epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "base_model": args.base_model,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.warm_start:
        overrides["warm_start"] = True
    job_id = request_training(args.reason, settings=settings, **overrides)
    print(job_id)
    return EXIT_OK


def cmd_promote(db, settings: Settings, args) -> int:
    from worker import artifacts

    version = artifacts.checked_version(args.version)
    if not artifacts.version_dir(settings.models_dir, version).is_dir():
        raise UnknownVersion(f"no artifacts for {version} under {settings.models_dir}")
    previous = versions.promote(db, version)
    artifacts.point_champion(settings.models_dir, version)
    print(f"champion: {version} (was {previous or 'none'})")
    return EXIT_OK


def cmd_rollback(db, settings: Settings, _args) -> int:
    from worker import artifacts

    demoted, restored = versions.rollback(db)
    artifacts.point_champion(settings.models_dir, restored)
    print(f"champion: {restored} (rolled back from {demoted})")
    return EXIT_OK


def cmd_report(db, settings: Settings, args) -> int:
    from worker import artifacts

    version = artifacts.checked_version(args.version)
    versions.get_version(db, version)
    path = artifacts.version_dir(settings.models_dir, version) / "training_report.txt"
    if not path.is_file():
        raise UnknownVersion(f"{version} has no report at {path}")
    sys.stdout.write(Path(path).read_text())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eduranker", description="Operate the EduRanker trainer.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="feedback counts, distance to the next trigger, jobs, champion")
    sub.add_parser("versions", help="table of model versions with key metrics")
    train = sub.add_parser("train", help="enqueue a manual training job")
    train.add_argument("--reason", default="manual (cli)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--base-model")
    train.add_argument("--warm-start", action="store_true")
    promote = sub.add_parser("promote", help="make VERSION the champion")
    promote.add_argument("version")
    sub.add_parser("rollback", help="restore the previous champion")
    report = sub.add_parser("report", help="print a version's training report")
    report.add_argument("version")
    return parser


COMMANDS = {"status": cmd_status, "versions": cmd_versions, "train": cmd_train, "promote": cmd_promote,
            "rollback": cmd_rollback, "report": cmd_report}  # fmt: skip


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or Settings.from_env()
    try:
        with retryable_on_mongo_errors():
            db = connect(settings, timeout_ms=5000)
            ensure_indexes(db)
            return COMMANDS[args.command](db, settings, args)
    except UnknownVersion as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RetryableError as exc:
        print(f"error: cannot reach MongoDB at {redact_url(settings.mongodb_url)}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except AccessDenied as exc:
        print(
            f"error: {exc}; check the credentials in MONGODB_URL ({redact_url(settings.mongodb_url)})", file=sys.stderr
        )
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
