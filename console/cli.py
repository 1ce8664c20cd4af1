"""`eduranker [--index NAME]`: indexes, status, versions, train, watch, cancel, promote, reject, rollback,
report, prune and new-epoch (`COMMANDS`), over the store and the task name, each on one search index's
records and folder (`--index`, default `default`); `serve` runs the reranking endpoints.

Exit codes: 0 ok, 1 the request cannot be done (unknown version, nothing to roll back), 2 usage,
3 a server is unreachable, 130 interrupted; `EXIT_CODES` says it in each --help.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from console import challenge_view
from console.progress import follow_jobs
from console.registry_view import (
    fmt,
    guard_lines,
    live,
    print_comparison,
    print_housekeeping,
    print_indexes,
    print_slices,
    version_row,
    versions_header,
)
from eduranker import champion, models_dir
from eduranker.errors import AccessDenied, ChampionChanged, Refused, RetryableError, UnknownVersion, VersionUnusable
from eduranker.indexes import DEFAULT, describe_claim
from eduranker.settings import Settings, SettingsError, load_or_exit
from eduranker.store import connect, ensure_indexes, jobs, retryable_on_mongo_errors, versions
from eduranker.store.clock import server_now
from eduranker.store.connection import redact_url
from eduranker.store.feedback import count_future_dated, count_labels
from eduranker.store.types import Db
from eduranker.unreachable import unreachable_line

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def cmd_status(db: Db, settings: Settings, _args: argparse.Namespace) -> int:
    from producer.trigger import describe_next_trigger

    if len(settings.all_indexes) > 1:  # several searches: say whose figures these are
        print(f"index: {settings.index} ({describe_claim(settings.index_spec)}; `eduranker indexes` lists all)")
    totals = count_labels(db)
    print(f"feedback: {sum(totals.values())} usable (like {totals['like']}, dislike {totals['dislike']})")
    print(f"next trigger: {describe_next_trigger(db, settings)}")
    future = count_future_dated(db, server_now(db))
    if future:  # an API host whose clock is ahead: counted once the server's time reaches them
        print(f"feedback dated in the future: {future} (not counted until the server's time reaches it)")
    active = jobs.unfinished_jobs(db)
    by_status = Counter(job["status"] for job in active)
    print(
        f"jobs queued: {by_status[jobs.QUEUED]}, running: {by_status[jobs.RUNNING]}, waiting: {by_status[jobs.WAITING]}"
    )
    for job in active:
        progress = job.get("progress") or {}
        print(f"  {job['_id']} {job['status']} {progress.get('stage', '')}")
    try:
        champion_doc = versions.get_champion(db)
    except UnknownVersion as exc:  # the record names a version whose document is gone: say so, go on
        champion_doc = None
        print(f"champion: BROKEN record ({exc})")
    if champion_doc:
        from eduranker.pipeline.evaluation import METRICS

        value = champion_doc["metrics"]["after"].get(METRICS.primary.name)
        print(f"champion: {champion_doc['version']} (held-out {METRICS.primary.label} {fmt(value)})")
        online = champion_doc.get("online")
        if online:
            print(f"  live: {live(online)}; holdback: {live(online.get('holdback'))}")
            print(f"  online guard: {online.get('guard')}")
            print_comparison(online)
    elif versions.read_champion(db).version is None:
        print("champion: none (the base model serves)")
    for line in challenge_view.status_lines(db):
        print(line)
    pointer = models_dir.champion_target(settings.models_dir)
    registry = champion_doc["version"] if champion_doc else None
    agreement = "agrees" if pointer == registry else "DISAGREES with the registry"
    print(f"pointer: {settings.models_dir}/champion -> {pointer or 'none'} ({agreement})")
    _print_retention(db, settings)
    print_housekeeping(db)
    return EXIT_OK


def cmd_versions(db: Db, _settings: Settings, _args: argparse.Namespace) -> int:
    rows = versions.list_versions(db)
    if not rows:
        print("no versions yet")
        return EXIT_OK
    # 91 columns: fits a 100-column terminal; the live like rate, when there is one, gets a line of its own.
    print(versions_header())
    for v in rows:
        print(version_row(v))
        if live(v.get("online")) != "-":
            print(f"    live like rate: {live(v.get('online'))}")
        print_slices(v)
    if any(v.get("forced") for v in rows):
        print("* promoted with --force over the gate's rejection")
    guard_lines(rows)
    for line in challenge_view.version_lines(rows):
        print(line)
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
    if version == challenge_view.running_challenger(db):  # ends its challenge by hand
        ended = challenge_view.end_by_hand(db, settings.models_dir, version, promote=True, reason=args.reason)
        print(f"champion: {version} (was {ended.against or 'none'}); its challenge ended by hand")
        return EXIT_OK
    previous = champion.promote(db, settings.models_dir, version, by="cli", reason=args.reason, force=args.force)
    print(f"champion: {version} (was {previous or 'none'})")
    return EXIT_OK


def cmd_reject(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    ended = challenge_view.end_by_hand(db, settings.models_dir, args.version, promote=False, reason=args.reason)
    print(f"rejected challenger {ended.version}; champion stays {ended.against or 'the base model'}")
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


def cmd_new_epoch(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    from eduranker.store import evaluation_epochs  # docs/gate.md, the stable split

    problem = evaluation_epochs.check_epochs(db)
    if problem is None and not args.force:
        raise Refused("the evaluation epochs match the registry; a new epoch is not needed (--force starts one)")
    from eduranker.pipeline.text import LATEST  # the query key a new epoch hashes

    record = evaluation_epochs.start_epoch(db, settings.test_fraction, settings.split_key, by=f"cli: {args.reason}",
                                           query_key_version=LATEST)  # fmt: skip
    print(f"evaluation epoch {record.epoch} started (test fraction {record.test_fraction}, key {record.fingerprint}); "
          f"versions of earlier epochs count as possibly trained on any held-out query")  # fmt: skip
    return EXIT_OK


def _print_retention(db: Db, settings: Settings) -> None:
    """The champion's files as the search API would load them, and the last prune pass's skips."""
    from eduranker.store.retention import last_pass

    problem = champion.pointer_problem(db, settings.models_dir)
    if problem:
        print(f"  PROBLEM: {problem}")
    last = last_pass(db)
    if last and last.get("skipped"):
        skipped = last["skipped"]
        print(f"retention: {len(skipped)} version document(s) skipped at {last.get('at')}: {'; '.join(skipped)}")


def cmd_prune(db: Db, settings: Settings, args: argparse.Namespace) -> int:
    from eduranker.pruning import prune  # docs/retention.md

    report = prune(db, settings, now=server_now(db), dry_run=args.dry_run, by="cli")
    verb = "would prune" if args.dry_run else "pruned"
    print(f"{verb}: {', '.join(report.pruned) or 'nothing'}; kept {report.kept} folders")
    if report.finished:
        print(f"{'would finish' if args.dry_run else 'finished'} earlier prunes: {', '.join(report.finished)}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} version document(s): {'; '.join(report.skipped)}")
    return EXIT_OK


EXIT_CODES = (
    "exit codes: 0 done, 1 the request cannot be done (an unknown version or job, nothing to roll back, "
    "a refusal of the registry), 2 usage or an invalid setting, 3 MongoDB unreachable or refusing the "
    "credentials, 130 interrupted (Ctrl-C)"
)


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, each option, and the exit codes."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary, epilog=EXIT_CODES)
    # Also after the command (`eduranker status --index fr`); given there, it wins.
    parser.add_argument("--index", default=argparse.SUPPRESS, help=INDEX_HELP)
    return parser


INDEX_HELP = "the search index to act on (a name of INDEXES, docs/indexes.md; default: default)"


def cmd_indexes(db: Db, _settings: Settings, args: argparse.Namespace) -> int:
    print_indexes(db, args.process_settings)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eduranker", description="Operate the EduRanker trainer. Settings come "
                                     "from the environment (docs/configuration.md).", epilog=EXIT_CODES)  # fmt: skip
    parser.add_argument("--index", default=DEFAULT, help=INDEX_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(sub, "status", "feedback counts, distance to the next trigger, jobs, champion")
    _command(sub, "indexes", "every search index: what feedback it owns, its queue, folder, feedback, champion, jobs")
    _command(sub, "versions", "table of model versions with key metrics")
    train = _command(
        sub, "train", "record and send a manual training job (it waits behind an active one); prints its id"
    )
    train.add_argument("--reason", default="manual (cli)", help="stored on the job (default: %(default)s)")
    train.add_argument("--epochs", type=int, help="NUM_EPOCHS for this job")
    train.add_argument("--batch-size", type=int, help="BATCH_SIZE for this job")
    train.add_argument("--learning-rate", type=float, help="LEARNING_RATE for this job")
    train.add_argument("--base-model", help="BASE_MODEL_NAME for this job (hub name or local path)")
    train.add_argument("--warm-start", action="store_true", help="fine-tune from the champion, not the base model")
    train.add_argument("--follow", action="store_true", help="show the job's progress until it ends")
    watch = _command(sub, "watch", "show jobs' progress (a bar on a terminal) until they end")
    watch.add_argument("job_ids", nargs="+", metavar="JOB", help="a job id (as `status` or `train` prints it)")
    promote = _command(sub, "promote", "make VERSION the champion (its artifacts are checked first)")
    promote.add_argument("version", help="a registered version, e.g. v0002")
    promote.add_argument("--force", action="store_true", help="promote a version the gate rejected")
    promote.add_argument("--reason", default="operator (cli)", help="stored in the version's history")
    reject = _command(sub, "reject", "end the running challenge: its challenger is rejected, the champion stays")
    reject.add_argument("version", nargs="?", help="the challenger, e.g. v0002 (checked, if given)")
    reject.add_argument("--reason", default="operator (cli)", help="stored in the version's history")
    rollback = _command(sub, "rollback", "restore the champion before the current one")
    rollback.add_argument("--reason", default="operator (cli)", help="stored in the versions' history")
    cancel = _command(sub, "cancel", "cancel a waiting, queued or running job (a running one stops at its next step)")
    cancel.add_argument("job_id", metavar="JOB", help="the job's id")
    cancel.add_argument("--reason", default="operator (cli)", help="stored on the job")
    report = _command(sub, "report", "print a version's training report")
    report.add_argument("version", help="a registered version, e.g. v0002")
    prune = _command(sub, "prune", "delete old rejected and retired version folders by the retention settings")
    prune.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    epoch = _command(sub, "new-epoch", "start a new evaluation epoch on purpose (jobs stop while the recorded "
                     "epochs do not match the registry)")  # fmt: skip
    epoch.add_argument("--reason", default="operator (cli)", help="stored on the epoch")
    epoch.add_argument("--force", action="store_true", help="start one even though the epochs match")
    serve = _command(sub, "serve", "serve the reranking endpoints over HTTP (OpenAPI at /docs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument("--threads", type=int, help="requests scored at once, one torch thread each (default: cores)")
    serve.add_argument("--poll-seconds", type=float, default=5.0, help="how often the champion pointer is checked")
    serve.add_argument("--max-documents", type=int, default=100, help="candidates per request (default: %(default)s)")
    serve.add_argument("--resources-from-mongodb", action="store_true",
                       help="accept resource_ids, their texts read from MongoDB's resources (MONGODB_URL)")  # fmt: skip
    return parser


COMMANDS = {"status": cmd_status, "versions": cmd_versions, "train": cmd_train, "promote": cmd_promote,
            "rollback": cmd_rollback, "cancel": cmd_cancel, "watch": cmd_watch, "report": cmd_report,
            "prune": cmd_prune, "reject": cmd_reject, "new-epoch": cmd_new_epoch,
            "indexes": cmd_indexes}  # fmt: skip


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or load_or_exit()
    args.process_settings = settings  # `indexes` lists every index from the process's own settings
    try:  # every command acts on one index's records, folder and queue
        settings = settings.for_index(args.index)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":  # the search API's side: no broker, a database only for resource ids
        from console.serve import run

        return run(settings, args)
    try:
        with retryable_on_mongo_errors():
            db = connect(settings, timeout_ms=5000)
            ensure_indexes(db)
            champion.reconcile(db, settings.models_dir, by="cli")
            code = COMMANDS[args.command](db, settings, args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not in the interpreter's last flush
        return code
    except (UnknownVersion, VersionUnusable, Refused, ChampionChanged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RetryableError as exc:
        print(unreachable_line(settings.mongodb_url, exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    except AccessDenied as exc:
        print(
            f"error: {exc}; check the credentials in MONGODB_URL ({redact_url(settings.mongodb_url)})", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line a progress bar was on; nothing else to say
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader stopped reading (`eduranker status | head -1`): that is its right, not an error.
        # Point stdout at /dev/null so the interpreter's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
