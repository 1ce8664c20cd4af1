"""A snapshot of bounded size: read newest first, it stops once each side of the stable split holds what
TRAIN_MAX_PAIRS and GATE_MAX_PAIRS can use, and keeps exactly the pairs that reading everything would keep."""

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from eduranker.pipeline.bounds import newest, read_enough, read_newest_first
from eduranker.pipeline.caps import ReactionCap
from eduranker.pipeline.pairs import SnapshotBuilder, build_snapshot
from eduranker.pipeline.split import SplitKey, is_heldout, stable_split
from tests.explain import CapturedCommands, plan_stages

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
KEY = SplitKey(1, "cd" * 32, 0.5)


@pytest.mark.parametrize(
    ("train", "heldout", "train_cap", "gate_cap", "enough"),
    [
        (0, 0, 100, 20, False),
        (99, 20, 100, 20, False),  # the training side is short
        (100, 19, 100, 20, False),  # the held-out side is short
        (100, 20, 100, 20, True),
        (5_000, 900, 100, 20, True),
        (10**6, 10**6, 0, 20, False),  # TRAIN_MAX_PAIRS 0: no cap, read everything
        (10**6, 10**6, 100, 0, False),  # GATE_MAX_PAIRS 0: no cap, read everything
        (0, 0, 0, 0, False),
    ],
)
def test_read_enough_needs_both_sides_full_and_a_cap_of_0_is_never_full(train, heldout, train_cap, gate_cap, enough):
    assert read_enough(train, heldout, train_cap, gate_cap) is enough


def row(n: int, at: Any, *, query: int = 0, resource: int = 0, feedback: Any = "like", user: str | None = "u1",
        created: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """A joined row as the store yields it (texts found and clean)."""
    return {
        "_id": ObjectId(f"{n:024x}"),
        "query_id": ObjectId(f"{query + 1:024x}"),
        "resource_id": ObjectId(f"{resource + 1:024x}"),
        "feedback": feedback,
        "feedback_at": at,
        "created_at": created or (at if isinstance(at, datetime) else T0),
        "user_id": user,
        "query_found": True,
        "resource_found": True,
        "query_text": f"query number {query}",
        "query_text_type": "string",
        "query_text_length": 16,
        "title": f"resource {resource}",
        "title_type": "string",
        "description": None,
        "description_type": "missing",
        "document_length": 10,
    }


def _time(r: dict[str, Any]) -> datetime:
    return r["feedback_at"] if isinstance(r.get("feedback_at"), datetime) else r["created_at"]


def newest_first_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order the store reads in: feedback time (feedback_at, else created_at), then id, newest first."""
    return sorted(rows, key=lambda r: (_time(r), str(r["_id"])), reverse=True)


def heldout(query: str) -> bool:
    return is_heldout(query, KEY)


def everything_then_caps(rows, reactions: int, train_cap: int, gate_cap: int, now: datetime):
    """What a job kept before: every row, the reaction cap, the snapshot, the split, then the caps."""
    snapshot = build_snapshot(ReactionCap(reactions).apply(rows), 1000, now=now)
    train, test = stable_split(snapshot.pairs, KEY)
    return newest(train, train_cap).kept, newest(test, gate_cap).kept, snapshot


def bounded(rows, reactions: int, train_cap: int, gate_cap: int, now: datetime, rest=(), side=heldout):
    cap = ReactionCap(reactions)
    builder = SnapshotBuilder(1000, now, heldout=side)
    read = read_newest_first(cap.by_day(newest_first_order(rows)), lambda: cap.rest(rest), builder, train_cap,
                             gate_cap)  # fmt: skip
    snapshot = builder.build()
    train, test = stable_split(snapshot.pairs, KEY)
    return newest(train, train_cap).kept, newest(test, gate_cap).kept, snapshot, read, cap


def ids(pairs) -> list[tuple[str, float]]:
    return [(p.inference_id, p.label) for p in pairs]


def test_a_read_never_stops_inside_one_instant():
    """Caps met after two rows, but five rows share the newest time: all five are read, the sixth is not."""
    rows = [row(n, T0, query=n, resource=n) for n in range(1, 6)] + [row(9, T0 - timedelta(seconds=1), query=9)]
    builder = SnapshotBuilder(1000, T0 + timedelta(days=1), heldout=lambda q: q.endswith(("1", "3")))
    read = read_newest_first(ReactionCap(0).by_day(newest_first_order(rows)), list, builder, 1, 1)
    assert read.stopped_early and builder.snapshot.rows_seen == 5
    assert read.unread_from == T0 - timedelta(seconds=1)


def test_an_older_duplicate_is_superseded_and_one_beyond_the_stop_is_never_read():
    rows = [
        row(1, T0, query=1, feedback="dislike"),  # the newest label of (query 1, resource 0)
        row(2, T0 - timedelta(hours=1), query=1, feedback="like"),  # read, and superseded
        *[row(10 + n, T0 - timedelta(hours=2, minutes=n), query=10 + n, resource=n) for n in range(6)],
        row(3, T0 - timedelta(days=3), query=1, feedback="like"),  # older than the stop: not read
    ]
    side = lambda query: query.endswith(("1", "3", "5"))  # noqa: E731
    _, _, snapshot, read, _ = bounded(rows, 0, 2, 2, T0 + timedelta(days=1), side=side)
    assert read.stopped_early and snapshot.rows_seen == 5
    labels = {p.inference_id: p.label for p in snapshot.pairs}
    assert labels[str(ObjectId(f"{1:024x}"))] == 0.0 and snapshot.duplicates_superseded == 1


def test_the_reaction_cap_reads_whole_days_and_counts_only_the_days_taken():
    """Cap 1 a day: each day u1 reacts three times (training side) and u2 once (held out); the caps are
    met by the first day, whose two later reactions by u1 are dropped."""
    rows = []
    for day in range(3):
        rows += [row(day * 10 + n, T0 - timedelta(days=day, minutes=n), query=day * 10 + n) for n in range(3)]
        rows.append(row(day * 10 + 7, T0 - timedelta(days=day, minutes=9), query=day * 10 + 7, user="u2"))
    _, _, snapshot, read, cap = bounded(rows, 1, 1, 1, T0 + timedelta(days=1), side=lambda q: q.endswith("7"))
    assert read.stopped_early and read.unread_from == T0 - timedelta(days=1)
    assert sorted(p.inference_id for p in snapshot.pairs) == [str(ObjectId(f"{n:024x}")) for n in (2, 7)]
    assert cap.report()["reactions_dropped"] == 2 and cap.report()["group_days_capped"] == 1


def _messy_rows(seed: int, now: datetime) -> list[dict[str, Any]]:
    """Duplicates with conflicting labels, ties, floods by one user, feedback without feedback_at (its
    created_at counts), dated in the future, malformed labels."""
    rng = random.Random(seed)
    rows = []
    for n in range(1, rng.randint(80, 400)):
        at = now - timedelta(minutes=rng.randrange(60 * 24 * 8))
        kind = rng.random()
        feedback = rng.choice(["like", "dislike"]) if kind > 0.05 else rng.choice(["meh", 1, ["like"]])
        user = rng.choice(["u1", "u2", "u3", "flood", None])
        r = row(n, at, query=rng.randrange(25), resource=rng.randrange(12), feedback=feedback, user=user)
        if kind > 0.9:
            r["feedback_at"] = None  # an insert carrying feedback: created_at is its time
        elif kind > 0.87:
            r["feedback_at"] = now + timedelta(days=rng.randint(1, 400))  # a skewed API clock
        elif kind > 0.8:
            r["feedback_at"] = rows[-1]["feedback_at"] if rows and rows[-1]["feedback_at"] else at  # a tie
        rows.append(r)
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_stopping_early_keeps_exactly_the_pairs_that_reading_everything_keeps(seed):
    now = T0
    rows = _messy_rows(seed, now)
    rng = random.Random(seed)
    reactions, train_cap, gate_cap = rng.choice([0, 1, 3]), rng.randint(1, 60), rng.randint(1, 40)
    train, gate, _ = everything_then_caps(rows, reactions, train_cap, gate_cap, now)
    b_train, b_gate, snapshot, read, _ = bounded(rows, reactions, train_cap, gate_cap, now)
    assert ids(b_train) == ids(train) and ids(b_gate) == ids(gate)
    if not read.stopped_early:  # everything read: the whole snapshot is the same
        assert snapshot.summary() == everything_then_caps(rows, reactions, 10**6, 10**6, now)[2].summary()


@pytest.mark.parametrize("reactions", [0, 2])
def test_with_no_cap_everything_is_read_and_the_snapshot_is_the_same(reactions):
    now = T0
    rows = _messy_rows(7, now)
    # A feedback_at of another type: read after the stream, counted after its day's reactions (its
    # created_at, T0, is later than any of that day's, as reading everything counts it); one with no date.
    undated = [row(9000 + n, "yesterday", query=n, created=None) for n in range(3)]
    undated[0]["created_at"] = None
    _, _, snapshot, read, cap = bounded(rows, reactions, 0, 20, now, rest=undated)
    whole_cap = ReactionCap(reactions)
    whole = build_snapshot(whole_cap.apply(rows + undated), 1000, now=now)
    assert not read.stopped_early and read.report()["why"].startswith("no cap")
    assert snapshot.summary() == whole.summary() and cap.report() == whole_cap.report()


# -- On the real server -------------------------------------------------------------------------------


def _insert_feedback(db, now: datetime) -> dict[str, Any]:
    """Nine days of feedback, one every 15 minutes, on 40 queries × 30 resources; returns what was planted."""
    rng = random.Random(5)
    users = [f"user-{i}" for i in range(10)]
    queries = [ObjectId() for _ in range(40)]
    db.user_queries.insert_many([{"_id": q, "query_text": f"how do plants use light {i}", "user_id": users[i % 10],
                                  "created_at": now - timedelta(days=10)} for i, q in enumerate(queries)])  # fmt: skip
    resources = db.resources.insert_many([{"title": f"Lesson {i}", "description": "text"} for i in range(30)])
    resource_ids = resources.inserted_ids
    docs = []
    for n in range(900):
        at = now - timedelta(hours=1, minutes=15 * n)
        doc = {"query_id": rng.choice(queries), "resource_id": rng.choice(resource_ids), "created_at": at,
               "feedback": rng.choice(["like", "dislike"]), "feedback_at": at}  # fmt: skip
        if n % 37 == 0:
            del doc["feedback_at"]  # inserted with its feedback: created_at is its time
        if n % 53 == 0:
            doc["feedback"] = "meh"  # malformed: skipped and counted when read
        docs.append(doc)
    # One pair liked long ago (beyond where the read stops) and disliked an hour ago: the dislike wins.
    q, r = queries[0], resource_ids[0]
    docs.append({"query_id": q, "resource_id": r, "feedback": "like", "feedback_at": now - timedelta(days=8),
                 "created_at": now - timedelta(days=8)})  # fmt: skip
    newest = {"query_id": q, "resource_id": r, "feedback": "dislike", "feedback_at": now - timedelta(minutes=50),
              "created_at": now - timedelta(days=8)}  # fmt: skip
    docs.append(newest)
    # A skewed API clock: three reactions dated a year ahead (taken as now).
    docs += [{"query_id": queries[i], "resource_id": resource_ids[i + 1], "feedback": "like",
              "feedback_at": now + timedelta(days=365), "created_at": now} for i in range(1, 4)]  # fmt: skip
    # One account floods a day within the read: 80 likes, of which the day's first 50 count.
    flood = [ObjectId() for _ in range(80)]
    db.user_queries.insert_many([{"_id": f, "query_text": f"flood {i}", "user_id": "mallory"}
                                 for i, f in enumerate(flood)])  # fmt: skip
    day = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    docs += [{"query_id": f, "resource_id": resource_ids[i % 30], "feedback": "like", "created_at": day,
              "feedback_at": day + timedelta(minutes=i)} for i, f in enumerate(flood)]  # fmt: skip
    db.inferences.insert_many(docs)
    return {"total": len(docs), "newest": newest}


class _Run:
    """What a job's run offers the snapshot stage: its id, and the record it writes."""

    job_id = "bounded-test"

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}

    def update(self, what: str, **fields: Any) -> None:
        self.record.update(fields)


def _bounded_settings(settings):
    return settings.with_overrides(train_max_pairs=100, gate_max_pairs=100, test_fraction=0.5)


@pytest.mark.integration
def test_the_job_snapshot_stops_early_and_keeps_what_reading_everything_keeps(db, settings):
    from eduranker.store import ensure_indexes
    from eduranker.store.clock import server_now
    from eduranker.store.snapshot import iter_feedback_rows
    from worker.stages import split_key, take_snapshot

    s = _bounded_settings(settings)
    ensure_indexes(db)
    now = server_now(db)
    planted = _insert_feedback(db, now)
    run = _Run()
    key = split_key(db, s, run.job_id)
    snapshot = take_snapshot(db, s, run, key)
    read = run.record["snapshot"]["read"]
    assert read["stopped_early"] and read["train_cap_reached"] and read["gate_cap_reached"]
    assert 0 < read["rows_read"] < planted["total"] * 3 / 4 and read["unread_from"] > now - timedelta(days=8)
    assert read["train_pairs"] >= 100 and read["heldout_pairs"] >= 100
    assert all(p.feedback_at > read["unread_from"] for p in snapshot.pairs)

    # Every row read, the reaction cap, the snapshot, the split, then the caps: the same pairs kept.
    cap = ReactionCap(s.max_reactions_per_user_per_day)
    whole = build_snapshot(cap.apply(iter_feedback_rows(db, s.max_text_chars)), s.max_text_chars,
                           now=server_now(db))  # fmt: skip
    train, test = stable_split(whole.pairs, key)
    b_train, b_test = stable_split(snapshot.pairs, key)
    assert ids(newest(b_train, 100).kept) == ids(newest(train, 100).kept)
    assert ids(newest(b_test, 100).kept) == ids(newest(test, 100).kept)
    assert len(snapshot.pairs) < len(whole.pairs)

    # The newest label of a pair wins over an older one the read never reached.
    label = {p.inference_id: p.label for p in snapshot.pairs}
    assert label[str(planted["newest"]["_id"])] == 0.0
    assert snapshot.future_dated == 3
    capped = run.record["snapshot"]["capped"]
    assert capped["reactions_dropped"] == 30 and capped["user_days_capped"] == 1
    assert snapshot.skipped == Counter({"invalid_feedback": snapshot.skipped["invalid_feedback"]})
    assert 0 < snapshot.skipped["invalid_feedback"] < whole.skipped["invalid_feedback"]


@pytest.mark.integration
@pytest.mark.parametrize("window_rows", [7, 5_000])
def test_windows_cut_short_after_a_quiet_spell_read_the_same_rows(db, settings, window_rows):
    """A month without feedback between now and the newest: the first window to reach it is cut short
    (small windows) or holds it all; either way the rows come newest first, each once."""
    from eduranker.store import ensure_indexes
    from eduranker.store.snapshot import FeedbackReader, iter_feedback_rows

    ensure_indexes(db)
    now = T0 + timedelta(days=30)
    _insert_feedback(db, T0)
    reader = FeedbackReader(db, 1000)
    read = [(r["_id"], _time(r)) for r in reader.newest_first(now, window_rows=window_rows)]
    assert read == sorted(read, key=lambda item: (item[1], str(item[0])), reverse=True)
    untimed = {r["_id"] for r in reader.without_time()}  # the malformed label without feedback_at
    everything = {r["_id"] for r in iter_feedback_rows(db, 1000)}
    assert len(read) == len({i for i, _ in read}) and len(untimed) == 1
    assert {i for i, _ in read} | untimed == everything and len(read) + 1 == len(everything)


@pytest.mark.integration
def test_the_newest_first_read_is_served_by_indexes(settings):
    from eduranker.store import ensure_indexes
    from eduranker.store.clock import server_now
    from worker.stages import split_key, take_snapshot

    captured = CapturedCommands("inferences")
    client: MongoClient = MongoClient(settings.mongodb_url, tz_aware=True, event_listeners=[captured])
    db = client[settings.mongodb_db]
    try:
        ensure_indexes(db)
        _insert_feedback(db, server_now(db))
        s = _bounded_settings(settings)
        run = _Run()
        captured.commands.clear()
        take_snapshot(db, s, run, split_key(db, s, run.job_id))
        assert run.record["snapshot"]["read"]["stopped_early"] and len(captured.commands) >= 6
        by_feedback_at = 0
        for command in captured.commands:
            stages = plan_stages(db, command)
            names = [stage.get("stage") for stage in stages]
            assert "IXSCAN" in names and "COLLSCAN" not in names, (command, names)
            index = next(stage["indexName"] for stage in stages if stage.get("stage") == "IXSCAN")
            if set(command["filter"]) == {"feedback_at"}:
                by_feedback_at += 1
                assert index == "feedback_newest" and command["sort"] == {"feedback_at": -1, "_id": -1}
            else:
                assert index == "feedback_window", command
        assert by_feedback_at == run.record["snapshot"]["read"]["windows"]
    finally:
        client.drop_database(settings.mongodb_db)
        client.close()
