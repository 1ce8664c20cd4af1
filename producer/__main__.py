"""`python -m producer` / `eduranker-producer`: run the feedback watcher until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import uuid

from celery import Celery
from pymongo.errors import PyMongoError

from eduranker.errors import AccessDenied, RetryableError
from eduranker.queue import make_celery
from eduranker.settings import Settings, load_or_exit
from eduranker.store import connect, retryable_on_mongo_errors
from eduranker.store.connection import TRAINING_JOBS, CommandCounter
from eduranker.store.types import Db, for_index
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
    settings = load_or_exit()
    # Several indexes: each line names the index whose loop wrote it (its thread, `index-fr`).
    who = "producer %(threadName)s" if len(settings.all_indexes) > 1 else "producer"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {who}: %(message)s")
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
    producers = leaders(settings, db, make_celery(settings, "eduranker-producer"), commands)
    # /metrics, /healthz, /readyz on METRICS_PORT, leader or standby (its own thread and client).
    metrics_http.serve(
        settings, producers[0].lease.holder, watching=lambda: any(p.watching.is_set() for p in producers)
    )

    # SIGTERM (docker stop, Ctrl-C) ends every loop after its current evaluation; state is already saved.
    def stop(*_: object) -> None:
        for producer in producers:
            producer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_all(producers)
    return 0


def leaders(settings: Settings, db: Db, app: Celery, commands: CommandCounter) -> list[Producer]:
    """One Producer per configured index, on the index's own settings and records (its lease, its
    state, its jobs), all under this process's one name and one client."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return [
        Producer(s, for_index(db, s.index_spec), app, holder=holder, commands=commands) for s in settings.each_index()
    ]


def run_all(producers: list[Producer]) -> None:
    """Each index's loop in a thread of its own: a fault in one (its loop retries) never stops another's."""
    if len(producers) == 1:  # one index: in the main thread, as before
        producers[0].run()
        return
    threads = [threading.Thread(target=p.run, name=f"index-{p.settings.index}", daemon=True) for p in producers]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.5)


if __name__ == "__main__":
    sys.exit(main())
