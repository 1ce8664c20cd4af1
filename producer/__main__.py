"""`python -m producer` / `eduranker-producer`: run the feedback watcher until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from pymongo.errors import PyMongoError

from eduranker.errors import AccessDenied, RetryableError
from eduranker.queue import make_celery
from eduranker.settings import load_or_exit
from eduranker.store import connect, retryable_on_mongo_errors
from eduranker.store.connection import TRAINING_JOBS, CommandCounter
from eduranker.unreachable import unreachable_line
from producer import metrics_http
from producer.watcher import Producer

EXIT_UNREACHABLE, EXIT_INTERRUPTED = 3, 130
START_TIMEOUT_MS = 10_000  # how long the first contact with MongoDB may take before the producer gives up


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m producer",
        description="Watch EduRanker's feedback (a MongoDB change stream) and record and enqueue training jobs "
        "when the thresholds are crossed. One producer leads (a lease in MongoDB); others wait as standbys. "
        "Every setting comes from the environment (docs/configuration.md).",
        epilog="Exit codes: 0 stopped by SIGTERM or Ctrl-C, 2 an invalid setting, 3 MongoDB unreachable or "
        "refusing the credentials at start, 130 Ctrl-C before it started.",
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)  # --help answers here, before any setting is read or server reached
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s producer: %(message)s")
    settings = load_or_exit()
    commands = CommandCounter()
    db = connect(settings, timeout_ms=START_TIMEOUT_MS, listeners=[commands])
    try:
        with retryable_on_mongo_errors():
            # A read of its own collection, not a ping: a server with auth answers pings without credentials.
            db[TRAINING_JOBS].find_one({}, {"_id": 1})
    except (RetryableError, AccessDenied, PyMongoError) as exc:
        print(unreachable_line(settings.mongodb_url, exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:  # Ctrl-C while still waiting for the server: nothing was started
        return EXIT_INTERRUPTED
    producer = Producer(settings, db, make_celery(settings, "eduranker-producer"), commands=commands)
    # /metrics, /healthz, /readyz on METRICS_PORT, leader or standby (its own thread and client).
    metrics_http.serve(settings, producer.lease.holder, watching=producer.watching.is_set)
    # SIGTERM (docker stop, Ctrl-C) ends the loop after the current evaluation; state is already saved.
    signal.signal(signal.SIGTERM, lambda *_: producer.stop())
    signal.signal(signal.SIGINT, lambda *_: producer.stop())
    producer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
