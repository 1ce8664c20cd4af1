"""A leader lease in MongoDB: several producers may run, one acts.

The lease document names its holder and when it expires, on the database server's clock: a renewal
reads the server's now and writes that plus the lease, and a standby compares the expiry with the
server's now too, so hosts' clocks never meet. The holder renews it every third of its length and stops
acting a fifth of a lease before the expiry it wrote, measured on its own monotonic clock from before
the server's time was read. So a leader that stalls (paused, cut off from the database) stops before any
standby may start, however far its host clock is off.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from eduranker.store.clock import SERVER_NOW, server_now
from eduranker.store.connection import PRODUCER_STATE
from eduranker.store.types import Db

LEASE_ID = "producer-lease"


class Lease:
    def __init__(self, db: Db, holder: str, seconds: float):
        self.db, self.holder, self.seconds = db, holder, seconds
        self.valid_until = 0.0  # monotonic
        self.renew_due = 0.0

    def held(self) -> bool:
        return time.monotonic() < self.valid_until

    def acquire(self) -> bool:
        """Take or renew the lease; True if this process holds it now."""
        sent = time.monotonic()
        at = server_now(self.db)
        try:
            result = self.db[PRODUCER_STATE].update_one(
                {"_id": LEASE_ID, "$or": [{"holder": self.holder}, {"expires_at": {"$lte": at}}]},
                {"$set": {"holder": self.holder, "expires_at": at + timedelta(seconds=self.seconds), "renewed_at": at}},
                upsert=True,
            )
        except DuplicateKeyError:  # held by another, unexpired
            self.valid_until = 0.0
            return False
        if result.matched_count == 0 and result.upserted_id is None:
            self.valid_until = 0.0
            return False
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
