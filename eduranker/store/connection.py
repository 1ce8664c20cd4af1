"""MongoDB connection, collection names and the indexes the trainer relies on."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient, monitoring
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from eduranker.errors import AccessDenied, RetryableError
from eduranker.settings import Settings
from eduranker.store.types import Db, Document

log = logging.getLogger(__name__)

INFERENCES = "inferences"
USER_QUERIES = "user_queries"
RESOURCES = "resources"
TRAINING_JOBS = "training_jobs"
MODEL_VERSIONS = "model_versions"
COUNTERS = "counters"
PRODUCER_STATE = "producer_state"
CHAMPION_RECORD = "champion"


AUTH_FAILED_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
_CREDENTIALS = re.compile(r"(//[^:/@]+:)[^@]*@")


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends, by name: what a process costs the database."""

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.by_name[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def connect(
    settings: Settings, *, timeout_ms: int = 10_000, listeners: Sequence[monitoring.CommandListener] = ()
) -> Db:
    """Open a client lazily (pymongo connects on first use) and return the configured database."""
    client: MongoClient[Document] = MongoClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        appname="eduranker-trainer",
        # A string stored with invalid UTF-8 by some old client reads as U+FFFD instead of failing the batch.
        unicode_decode_error_handler="replace",
        event_listeners=list(listeners),
    )
    return client[settings.mongodb_db]


def ensure_indexes(db: Db) -> None:
    """Create the indexes the trainer's guarantees rest on. Idempotent."""
    jobs = db[TRAINING_JOBS]
    jobs.create_index([("status", ASCENDING), ("created_at", DESCENDING)], name="status_created")
    # One active (queued or running) job at a time, whoever recorded it.
    jobs.create_index("active", unique=True, partialFilterExpression={"active": True}, name="one_active_job")
    versions = db[MODEL_VERSIONS]
    versions.create_index("version", unique=True, name="unique_version")
    # The database itself refuses a second champion, whatever the code does.
    versions.create_index(
        "status",
        unique=True,
        partialFilterExpression={"status": "champion"},
        name="one_champion",
    )
    # The producer's counts and watermark: with one label fixed, each query is a tight range of this
    # index, so its cost follows the feedback counted, not the size of `inferences`.
    db[INFERENCES].create_index(
        [("feedback", ASCENDING), ("feedback_at", ASCENDING), ("created_at", ASCENDING)], name="feedback_window"
    )


@contextlib.contextmanager
def retryable_on_mongo_errors() -> Iterator[None]:
    """Turn pymongo's errors into ours, so callers need not know pymongo: a lost server is retryable,
    refused credentials are not."""
    try:
        yield
    except (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError) as exc:
        raise RetryableError(f"MongoDB unreachable: {exc}") from exc
    except OperationFailure as exc:
        if exc.code in AUTH_FAILED_CODES:
            raise AccessDenied(
                f"MongoDB refused access: {exc.details.get('errmsg', exc) if exc.details else exc}"
            ) from exc
        raise


def redact_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return _CREDENTIALS.sub(r"\1***@", url)


T = TypeVar("T")
UNREACHABLE = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)


def patiently(write: Callable[[], T], *, patience_s: float, what: str) -> T:
    """Run a database call, retrying with backoff while the server is unreachable, for up to
    `patience_s`; then RetryableError. For the writes a job cannot do without (its outcome)."""
    deadline, delay = time.monotonic() + patience_s, 0.5
    while True:
        try:
            return write()
        except UNREACHABLE as exc:
            if time.monotonic() + delay > deadline:
                raise RetryableError(f"MongoDB unreachable for {patience_s:.0f} s while {what}: {exc}") from exc
            log.warning("MongoDB unreachable while %s; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
