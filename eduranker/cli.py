"""`eduranker`: status, versions, train, promote, rollback and report, over the store and the task name.

Exit codes: 0 ok, 1 the request cannot be done (unknown version, nothing to roll back), 2 usage,
3 a server is unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eduranker import champion, models_dir
from eduranker.errors import AccessDenied, Refused, RetryableError, StaleCandidate, UnknownVersion
from eduranker.progress import follow_jobs
from eduranker.settings import Settings, load_or_exit
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors, versions
from eduranker.store.connection import redact_url
from eduranker.store.feedback import count_usable_feedback
from eduranker.store.types import Db

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 3


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def cmd_status(db: Db, settings: Settings, _args: argparse.Namespace) -> int:
    from producer.trigger import describe_next_trigger

    totals = count_usable_feedback(db)
    print(f"feedback: {sum(totals.values())} usable (like {totals['like']}, dislike {totals['dislike']})")
    print(f"next trigger: {describe_next_trigger(db, settings)}")
    active = jobs.active_jobs(db)
    by_status = {status: sum(j["status"] == status for j in active) for status in ("queued", "running", "waiting")}
    print(f"jobs queued: {by_status['queued']}, running: {by_status['running']}, waiting: {by_status['waiting']}")
    for job in active:
        progress = job.get("progress") or {}
        print(f"  {job['_id']} {job['status']} {progress.get('stage', '')}")
    champion_doc = versions.get_champion(db)
    if champion_doc:
        auc = champion_doc["metrics"]["after"].get("roc_auc")
        print(f"champion: {champion_doc['version']} (held-out ROC-AUC {_fmt(auc)})")
        online = champion_doc.get("online")
        if online:
            print(f"  live: {_live(online)}; holdback: {_live(online.get('holdback'))}")
            print(f"  online guard: {online.get('guard')}")
    else:
        print("champion: none (the base model serves)")
    pointer = models_dir.champion_target(settings.models_dir)
    registry = champion_doc["version"] if champion_doc else None
    agreement = "agrees" if pointer == registry else "DISAGREES with the registry"
    print(f"pointer: {settings.models_dir}/champion -> {pointer or 'none'} ({agreement})")
    return EXIT_OK


def _live(online: dict[str, Any] | None) -> str:
    """Like rate with its Wilson interval, from the producer's last refresh."""
    if not online or not online.get("feedback"):
        return "-"
    low, high = online["like_rate_interval"]
    return f"{online['like_rate']:.2f} [{low:.2f},{high:.2f}] of {online['feedback']}"


def _interval(v: dict[str, Any]) -> str:
    auc = ((v.get("metrics") or {}).get("intervals") or {}).get("roc_auc") or {}
    if auc.get("low") is None:
        return "-"
    return f"[{auc['low']:+.3f},{auc['high']:+.3f}]"


def cmd_versions(db: Db, _settings: Settings, _args: argparse.Namespace) -> int:
    rows = versions.list_versions(db)
    if not rows:
        print("no versions yet")
        return EXIT_OK
    columns = f"{'version':<9}{'status':<12}{'roc_auc':>9}{'Δ auc':>8}{'95% CI of Δ':>18}{'ndcg@10':>9}{'f1':>7}"
    print(f"{columns}{'pairs':>7}  {'live like rate':<24}created")
    for v in rows:
        after, before = v.get("metrics", {}).get("after", {}), v.get("metrics", {}).get("before", {})
        gain = None
        if after.get("roc_auc") is not None and before.get("roc_auc") is not None:
            gain = after["roc_auc"] - before["roc_auc"]
        created = f"{v['created_at']:%Y-%m-%d %H:%M}" if v.get("created_at") else "-"
        status = v["status"] + ("*" if v.get("forced") else "")
        print(
            f"{v['version']:<9}{status:<12}{_fmt(after.get('roc_auc')):>9}"
            f"{('-' if gain is None else f'{gain:+.3f}'):>8}{_interval(v):>18}{_fmt(after.get('ndcg@10')):>9}"
            f"{_fmt(after.get('f1')):>7}{_fmt(v.get('snapshot', {}).get('pairs')):>7}  {_live(v.get('online')):<24}"
            f"{created}"
        )
    if any(v.get("forced") for v in rows):
        print("* promoted with --force over the gate's rejection")
    return EXIT_OK


def cmd_train(_db: Db, settings: Settings, args: argparse.Namespace) -> int:
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
    print(job_id, flush=True)
    if args.follow:
        follow_jobs(_db, job_ids=[job_id])
    return EXIT_OK


def cmd_watch(db: Db, _settings: Settings, args: argparse.Namespace) -> int:
    missing = [j for j in args.job_ids if jobs.get_job(db, j) is None]
    if missing:
        raise Refused(f"no training job {', '.join(missing)}")
    follow_jobs(db, job_ids=args.job_ids)
    return EXIT_OK


def cmd_promote(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    version = models_dir.checked_version(args.version)
    previous = champion.promote(db, settings.models_dir, version, by="cli", reason=args.reason, force=args.force)
    print(f"champion: {version} (was {previous or 'none'})")
    return EXIT_OK


def cmd_rollback(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    demoted, restored = champion.rollback(db, settings.models_dir, by="cli", reason=args.reason)
    print(f"champion: {restored} (rolled back from {demoted})")
    return EXIT_OK


def cmd_cancel(db: Db, _settings: Settings, args: argparse.Namespace) -> int:
    job = jobs.get_job(db, args.job_id)
    if job is None:
        raise Refused(f"no training job {args.job_id!r}")
    if not jobs.cancel_job(db, args.job_id, args.reason):
        raise Refused(f"job {args.job_id} is {job['status']}: only waiting, queued or running jobs can be cancelled")
    # A running run is fenced out: its next write fails and it stops without registering anything.
    print(f"cancelled {args.job_id} (was {job['status']})")
    return EXIT_OK


def cmd_report(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    version = models_dir.checked_version(args.version)
    versions.get_version(db, version)
    path = models_dir.version_dir(settings.models_dir, version) / "training_report.txt"
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
    train.add_argument("--follow", action="store_true", help="show the job's progress until it ends")
    watch = sub.add_parser("watch", help="show jobs' progress (a bar on a terminal) until they end")
    watch.add_argument("job_ids", nargs="+", metavar="JOB")
    promote = sub.add_parser("promote", help="make VERSION the champion")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote a version the gate rejected")
    promote.add_argument("--reason", default="operator (cli)")
    rollback = sub.add_parser("rollback", help="restore the champion before the current one")
    rollback.add_argument("--reason", default="operator (cli)")
    cancel = sub.add_parser("cancel", help="cancel a waiting, queued or running job")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default="operator (cli)")
    report = sub.add_parser("report", help="print a version's training report")
    report.add_argument("version")
    return parser


COMMANDS = {"status": cmd_status, "versions": cmd_versions, "train": cmd_train, "promote": cmd_promote,
            "rollback": cmd_rollback, "cancel": cmd_cancel, "watch": cmd_watch, "report": cmd_report}  # fmt: skip


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or load_or_exit()
    try:
        with retryable_on_mongo_errors():
            db = connect(settings, timeout_ms=5000)
            ensure_indexes(db)
            champion.reconcile(db, settings.models_dir, by="cli")
            return COMMANDS[args.command](db, settings, args)
    except (UnknownVersion, Refused, StaleCandidate) as exc:
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
