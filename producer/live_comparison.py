"""A live comparison of two versions kept as running sums, so a refresh costs what arrived since the last.

The first refresh of a comparison (or one whose change-stream position the server no longer has)
recomputes it from every search since `since`, as `producer.guard.compare` would, and stores per search
its contribution and per cluster the sums (`eduranker/store/comparison_sums.py`), with the change
stream's position taken before it read anything. Every later refresh reads the changes to `inferences`
since that position (feedback set, changed, removed; results inserted, replaced or deleted), recomputes
only the searches whose feedback they touched, and moves each cluster's sums by the difference between
a search's new contribution and its last, in transactions of `BATCH` changes, each fenced by the lease.
Results inserted add to each version's served count (a deleted result is not taken off it until the
next full recomputation, and a result inserted while the comparison is recomputed may be counted
twice: the served count is shown, never judged). A result inserted without a reaction into a search
that already has one is seen at that search's next reaction (the search API writes a search's results
together). Re-reading a change is harmless (a search recomputed twice has no difference the second
time), so the position may lag what was applied, never lead it.

Generic over the versions compared: the guard compares the champion with the previous champion; a
challenge compares the champion with a challenger. The cluster of a search is the caller's
`to_impression` (one function, `producer.online_refresh._impression`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pymongo.errors import OperationFailure

from eduranker.store import comparison_sums as store
from eduranker.store.clock import as_utc
from eduranker.store.lease import LeaseFence
from eduranker.store.online import ImpressionRow, impression_rows, reacted_searches, served_count
from eduranker.store.types import Db
from producer.comparison import Sums, add, contribution
from producer.guard import Impression

log = logging.getLogger(__name__)
BATCH = 1000  # change events per transaction
MAX_BATCHES = 100  # per refresh; the rest at the next one (the figures lag, the lease is never outlived)
ToImpression = Callable[[ImpressionRow], Impression]
LeaseCheck = Callable[[], LeaseFence]  # renews the lease when due; raises when it is lost


@dataclass(frozen=True)
class LiveSums:
    key: str
    clusters: list[Sums]
    totals: Sums
    rebuilt: bool = False
    events: int = 0  # changes applied by this refresh
    batches: int = 0


def comparison_key(first: str, second: str) -> str:
    return f"{first} vs {second}"


def refresh_sums(
    db: Db, first: str, second: str, since: datetime, to_impression: ToImpression, *,
    lease: LeaseCheck | None = None, purpose: str = "guard",
) -> LiveSums:  # fmt: skip
    """Bring the comparison's sums up to date and return them."""
    key = comparison_key(first, second)
    state = store.read_state(db, key)
    if state is None or state.token is None or as_utc(state.since) != as_utc(since):
        return _build(db, key, first, second, since, to_impression, state, lease, purpose)
    try:
        return _catch_up(db, state, to_impression, lease)
    except OperationFailure as exc:
        if exc.code not in store.RESUME_FAILED_CODES:
            raise
        log.warning("comparison %s: the change stream's position is gone (%s); recomputing it", key, exc)
        return _build(db, key, first, second, since, to_impression, state, lease, purpose)


def _catch_up(db: Db, state: store.State, to_impression: ToImpression, lease: LeaseCheck | None) -> LiveSums:
    assert state.token is not None
    events = batches = 0
    for touched in store.changes(db, state.token, state.since, batch=BATCH, limit=MAX_BATCHES):
        if not touched.events and touched.token == state.token:
            break
        # (No events but a newer position: stored too, so a quiet stream's position never ages out of
        # the server's history.)
        fence = lease() if lease is not None else None  # renews the lease between batches
        queries = store.searches_of(db, state, touched)
        changed, clusters, totals = differences(db, state, queries, to_impression)
        add(totals, {"s1_served": touched.served.get(state.first, 0), "s2_served": touched.served.get(state.second, 0)})
        number = store.apply_batch(db, state, changed, clusters, totals, touched.token, fence)
        merged = dict(state.totals)
        add(merged, totals)
        state = replace(state, batches=number, token=touched.token, totals=merged)
        events, batches = events + touched.events, batches + 1
    return LiveSums(state.key, store.cluster_sums(db, state), state.totals, False, events, batches)


def differences(
    db: Db, state: store.State, queries: Iterable[Any], to_impression: ToImpression
) -> tuple[list[store.Change], dict[str, Sums], Sums]:
    """The touched searches' new contributions, and what they move in each cluster and in the totals."""
    wanted = list(queries)
    rows = {row.query_id: row for row in impression_rows(db, [state.first, state.second], wanted, state.since)}
    old = store.stored(db, state, wanted)
    changed: list[store.Change] = []
    clusters: dict[str, Sums] = {}
    totals: Sums = {}
    for query in wanted:
        row, before = rows.get(query), old.get(query)
        imp = to_impression(row) if row is not None else None
        new = contribution(imp, state.first, state.second) if imp is not None else {}
        if before is None and not new:
            continue
        cluster = imp.cluster if imp is not None else before.cluster if before is not None else ""
        if before is not None:
            add(clusters.setdefault(before.cluster, {}), before.contribution, -1)
            add(totals, before.contribution, -1)
        add(clusters.setdefault(cluster, {}), new)
        add(totals, new)
        changed.append(store.Change(query, cluster, new, list(row.results) if row is not None else []))
    moved = {k: {n: v for n, v in d.items() if v} for k, d in clusters.items()}
    return changed, {k: d for k, d in moved.items() if d}, {n: v for n, v in totals.items() if v}


def _build(
    db: Db, key: str, first: str, second: str, since: datetime, to_impression: ToImpression,
    previous: store.State | None, lease: LeaseCheck | None, purpose: str,
) -> LiveSums:  # fmt: skip
    store.ensure_sums_indexes(db)  # idempotent; a build is rare, and the unique keys must hold
    token = store.stream_position(db)  # before reading: a change made during the read is read again
    changed: list[store.Change] = []
    clusters: dict[str, Sums] = {}
    totals: Sums = {}
    wanted: list[Any] = []
    for query in reacted_searches(db, [first, second], since):
        wanted.append(query)
        if lease is not None and len(wanted) % BATCH == 0:
            lease()  # a long read renews the lease as it goes (it is not a write: nothing to fence)
    for start in range(0, len(wanted), BATCH):
        if lease is not None:
            lease()
        for row in impression_rows(db, [first, second], wanted[start : start + BATCH], since):
            imp = to_impression(row)
            new = contribution(imp, first, second)
            if new:
                changed.append(store.Change(row.query_id, imp.cluster, new, list(row.results)))
                add(clusters.setdefault(imp.cluster, {}), new)
                add(totals, new)
    totals.update(s1_served=served_count(db, first, since, lease), s2_served=served_count(db, second, since, lease))
    build = store.new_build()
    try:
        store.write_build(db, key, build, changed, clusters, lease)
        fence = lease() if lease is not None else None
        store.switch_build(db, previous, key, first, second, since, build, token, totals, fence, purpose)
    except BaseException:
        store.forget_build(db, key, build)
        raise
    log.info("comparison %s recomputed from %d searches in %d clusters", key, len(changed), len(clusters))
    return LiveSums(key, list(clusters.values()), totals, True, 0, 0)
