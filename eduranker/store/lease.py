"""A leader lease in MongoDB: several producers may run, one acts.

The lease document names its holder and when it expires, on the database server's clock: a renewal
reads the server's now and writes that plus the lease, and a standby compares the expiry with the
server's now too, so hosts' clocks never meet. The holder renews it every third of its length and stops
acting a fifth of a lease before the expiry it wrote, measured on its own monotonic clock from before
the server's time was read. So a leader that stalls (paused, cut off from the database) stops before any
standby may start, however far its host clock is off.

Each acquisition (a new holder, or a holder whose lease had expired) bumps the lease's `term`. A write
that matters (the guard's rollback, the online comparison's sums) runs in one transaction with a proof
that its writer still holds the lease of the term it decided under (`fenced`): a leader that stalled
past its lease, and a decision made under an earlier term, change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError

from eduranker.errors import EduRankerError
from eduranker.store.clock import SERVER_NOW, literal, server_now
from eduranker.store.connection import PRODUCER_STATE
from eduranker.store.types import Db

LEASE_ID = "producer-lease"
T = TypeVar("T")


class LeaseLapsed(EduRankerError):
    """The lease is no longer held under the term a write was decided in: the write changed nothing."""


@dataclass(frozen=True)
class LeaseFence:
    """Who decided, under which term of the lease."""

    holder: str
    term: int

    def as_doc(self) -> dict[str, Any]:
        return {"holder": self.holder, "term": self.term}


def _prove(db: Db, fence: LeaseFence, session: ClientSession) -> bool:
    """A write to the lease document, in the caller's transaction: it matches only while `fence` holds
    an unexpired lease, and it conflicts with any acquisition committed meanwhile."""
    at = server_now(db)  # ($$NOW is not evaluated in a query filter by every server)
    result = db[PRODUCER_STATE].update_one(
        {"_id": LEASE_ID, "holder": fence.holder, "term": fence.term, "expires_at": {"$gt": at}},
        [{"$set": {"fenced_at": SERVER_NOW}}],
        session=session,
    )
    return result.matched_count == 1


def fenced(db: Db, fence: LeaseFence, write: Callable[[ClientSession], T]) -> T:
    """`write(session)` and the proof that `fence` still holds the lease, in one transaction: both
    commit or neither. Raises LeaseLapsed (nothing written) when the lease has moved on."""

    def body(session: ClientSession) -> T:
        if not _prove(db, fence, session):
            raise LeaseLapsed(f"lease no longer held by {fence.holder} in term {fence.term}")
        return write(session)

    with db.client.start_session() as session:
        return session.with_transaction(body)


class Lease:
    def __init__(self, db: Db, holder: str, seconds: float):
        self.db, self.holder, self.seconds = db, holder, seconds
        self.valid_until = 0.0  # monotonic
        self.renew_due = 0.0
        self.term = 0  # of the latest acquisition or renewal; 0 before the first

    def held(self) -> bool:
        return time.monotonic() < self.valid_until

    def fence(self) -> LeaseFence:
        return LeaseFence(self.holder, self.term)

    def acquire(self) -> bool:
        """Take or renew the lease; True if this process holds it now. Taking it (from another holder,
        or after it expired) starts a new term; renewing an unexpired lease keeps the term."""
        sent = time.monotonic()
        at = server_now(self.db)
        renewal = {"$and": [{"$eq": ["$holder", self.holder]}, {"$gt": ["$expires_at", at]}]}
        term = {"$cond": [renewal, {"$ifNull": ["$term", 0]}, {"$add": [{"$ifNull": ["$term", 0]}, 1]}]}
        fields = {"holder": self.holder, "renewed_at": at, "expires_at": at + timedelta(seconds=self.seconds)}
        update = [{"$set": {"term": term, **literal(fields)}}]
        try:
            doc = self.db[PRODUCER_STATE].find_one_and_update(
                {"_id": LEASE_ID, "$or": [{"holder": self.holder}, {"expires_at": {"$lte": at}}]},
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # held by another, unexpired
            self.valid_until = 0.0
            return False
        if doc is None:
            self.valid_until = 0.0
            return False
        self.term = int(doc.get("term") or 0)
        self.valid_until = sent + self.seconds * 0.8
        self.renew_due = sent + self.seconds / 3
        return True

    def keep(self) -> bool:
        """Renew when due; True while held. Cheap to call often."""
        if time.monotonic() >= self.renew_due:
            try:
                return self.acquire()
            except Exception:
                # Unreachable database: keep acting only until the lease would lapse anyway.
                return self.held()
        return self.held()

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at once instead of after expiry."""
        self.valid_until = 0.0
        expire = [{"$set": {"expires_at": SERVER_NOW}}]
        self.db[PRODUCER_STATE].update_one({"_id": LEASE_ID, "holder": self.holder}, expire)
