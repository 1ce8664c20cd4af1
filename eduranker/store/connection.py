"""MongoDB connection, collection names and the indexes the trainer relies on."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient, monitoring
from pymongo.collection import Collection
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from eduranker.errors import AccessDenied, RetryableError
from eduranker.records import VersionStatus
from eduranker.settings import Settings
from eduranker.store.types import Db, Document, IndexDb

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
    """Open a client lazily (pymongo connects on first use) and return the configured database as the
    settings' index sees it (eduranker/store/types.py)."""
    client: MongoClient[Document] = MongoClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        appname="eduranker-trainer",
        # A string stored with invalid UTF-8 by some old client reads as U+FFFD instead of failing the batch.
        unicode_decode_error_handler="replace",
        event_listeners=list(listeners),
        # Acknowledged only once a majority of the set has it, on disk: a failover cannot roll back a
        # claim, a `seq` bump or a lease renewal that a process already acted on. Reads see only such
        # writes, so no decision rests on one that may vanish. Settings refuse a URL asking for less.
        w="majority",
        journal=True,
        readConcernLevel="majority",
    )
    return IndexDb(client, settings.mongodb_db, settings.index_spec)


# IndexOptionsConflict, IndexKeySpecsConflict: an index with this key pattern (or this name) exists.
INDEX_CONFLICT_CODES = {85, 86}
_INDEX_OPTIONS = ("unique", "partialFilterExpression", "sparse")


def ensure_index(collection: Collection[Document], keys: Sequence[tuple[str, int]], name: str, **options: Any) -> str:
    """Create an index; one that already exists with the same key pattern and the same guarantees
    (unique, partial filter) under another name (an operator's, or an older release's) is used as it
    is, by its key pattern. Returns the name of the index that serves. An existing index with the same
    keys but weaker guarantees is an error naming both: the trainer's invariants would not hold."""
    try:
        return collection.create_index(list(keys), name=name, **options)
    except OperationFailure as exc:
        if exc.code not in INDEX_CONFLICT_CODES:
            raise
        for existing, spec in collection.index_information().items():
            if [(k, int(v)) for k, v in spec["key"]] != [(k, int(v)) for k, v in keys]:
                continue
            if all(spec.get(o) == options.get(o) for o in _INDEX_OPTIONS):
                log.info("index %s on %s: served by the existing index %s with its key pattern", name,
                         collection.name, existing)  # fmt: skip
                return existing
        raise


def ensure_indexes(db: Db) -> None:
    """Create the indexes the trainer's guarantees rest on. Idempotent."""
    jobs = db[TRAINING_JOBS]
    ensure_index(jobs, [("status", ASCENDING), ("created_at", DESCENDING)], "status_created")
    # One active (queued or running) job at a time, whoever recorded it.
    ensure_index(jobs, [("active", ASCENDING)], "one_active_job", unique=True, partialFilterExpression={"active": True})
    # At most MAX_WAITING_JOBS manual jobs and one automatic job wait: each holds its own wait slot.
    waiting = {"wait_slot": {"$exists": True}}
    ensure_index(jobs, [("wait_slot", ASCENDING)], "bounded_waiting", unique=True, partialFilterExpression=waiting)
    # The producer's periodic reads (tests/test_job_indexes.py explains each against 100,000 jobs): the
    # newest job, the newest automatic outcome, and the length of a failed automatic chain.
    ensure_index(jobs, [("created_at", DESCENDING)], "created")
    automatic = [("automatic", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)]
    ensure_index(jobs, automatic, "auto_status_created")
    chain = [("trigger.watermark", ASCENDING), ("automatic", ASCENDING), ("status", ASCENDING)]
    ensure_index(jobs, chain, "failed_chain")
    # Queued jobs not yet sent (`sent_at: null`): a null match needs its field in the index to use one.
    ensure_index(jobs, [("status", ASCENDING), ("sent_at", ASCENDING), ("created_at", ASCENDING)], "unsent")
    # Running jobs whose heartbeat fell silent (the requeue pass, every few seconds).
    ensure_index(jobs, [("status", ASCENDING), ("heartbeat_at", ASCENDING)], "silent_runs")
    versions = db[MODEL_VERSIONS]
    ensure_index(versions, [("version", ASCENDING)], "unique_version", unique=True)
    # The database itself refuses a second champion, whatever the code does.
    champions = {"status": VersionStatus.CHAMPION}
    ensure_index(versions, [("status", ASCENDING)], "one_champion", unique=True, partialFilterExpression=champions)
    # The producer's counts and watermark: with one label fixed, each query is a tight range of this
    # index, so its cost follows the feedback counted, not the size of `inferences`.
    window = [("feedback", ASCENDING), ("feedback_at", ASCENDING), ("created_at", ASCENDING)]
    ensure_index(db[INFERENCES], window, "feedback_window")
    # The snapshot's newest-first read: each window of feedback time is one range of this index, in its
    # order, so a job reads the newest feedback it needs and never the rest (eduranker/store/snapshot.py).
    ensure_index(db[INFERENCES], [("feedback_at", DESCENDING), ("_id", DESCENDING)], "feedback_newest")


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
