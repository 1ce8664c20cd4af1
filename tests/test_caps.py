"""Feedback poisoning: one user's reactions count at most MAX_REACTIONS_PER_USER_PER_DAY a day."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from eduranker.pipeline.caps import ReactionCap, day_of, group_of
from eduranker.pipeline.pairs import build_snapshot
from eduranker.store.snapshot import iter_feedback_rows

DAY = datetime(2026, 3, 1, 8, tzinfo=UTC)


def row(n, user="u1", feedback="like", at=DAY, query="q1"):
    return {"_id": f"i{n:04d}", "user_id": user, "query_id": query, "feedback": feedback, "feedback_at": at}


@pytest.mark.parametrize(
    ("rows", "cap", "kept", "report"),
    [
        # Under the cap nothing moves.
        ([row(1), row(2)], 2, ["i0001", "i0002"], {"reactions_dropped": 0, "group_days_capped": 0}),
        # Over it, the earliest of the day count, whatever order they stream in.
        (
            [row(3, at=DAY + timedelta(hours=3)), row(1), row(2, at=DAY + timedelta(hours=1))],
            2,
            ["i0001", "i0002"],
            {"reactions_dropped": 1, "group_days_capped": 1, "user_days_capped": 1},
        ),
        # Each UTC day has its own allowance.
        ([row(1), row(2), row(3, at=DAY + timedelta(days=1))], 1, ["i0001", "i0003"], {"reactions_dropped": 1}),
        # Users are counted apart.
        ([row(1), row(2, user="u2"), row(3, user="u3")], 1, ["i0001", "i0002", "i0003"], {"reactions_dropped": 0}),
        # An anonymous search is a group of its own; two anonymous searches are two groups.
        (
            [row(1, user=None), row(2, user=None), row(3, user="", query="q2")],
            1,
            ["i0001", "i0003"],
            {"reactions_dropped": 1, "user_days_capped": 0, "group_days_capped": 1},
        ),
        # Malformed feedback uses no allowance (the snapshot skips and counts it).
        (
            [
                row(1, feedback="meh"),
                row(2, feedback=None),
                row(4, feedback=["like"]),
                row(5, feedback={"a": 1}),
                row(3),
            ],
            1,
            ["i0001", "i0002", "i0003", "i0004", "i0005"],
            {"reactions_dropped": 0},
        ),
        # 0 = no cap.
        ([row(n) for n in range(5)], 0, [f"i{n:04d}" for n in range(5)], {"reactions_dropped": 0}),
    ],
    ids=["under", "earliest", "per-day", "per-user", "anonymous", "malformed", "off"],
)
def test_the_cap_keeps_the_earliest_reactions_per_user_and_day(rows, cap, kept, report):
    capper = ReactionCap(cap)
    assert sorted(r["_id"] for r in capper.apply(rows)) == kept
    assert report.items() <= capper.report().items()


def test_groups_name_users_and_anonymous_searches():
    assert group_of({"user_id": "alice", "query_id": "q"}) == "user:alice"
    assert group_of({"user_id": None, "query_id": "q"}) == "anonymous:q"
    assert group_of({"query_id": "q"}) == "anonymous:q"


def _feedback(db, n_queries, user_of, day=DAY, start=0):
    """n_queries queries with one reaction each on its own resource; user_of(i) gives its user."""
    for i in range(start, start + n_queries):
        q = ObjectId()
        query = {"_id": q, "query_text": f"query number {i}", "created_at": day}
        if user_of(i) is not None:
            query["user_id"] = user_of(i)
        db.user_queries.insert_one(query)
        r = db.resources.insert_one({"title": f"resource {i}", "description": "text"}).inserted_id
        db.inferences.insert_one({"query_id": q, "resource_id": r, "rank": 1, "score": 0.0, "model_version": None,
                                  "created_at": day, "feedback": "like" if i % 2 else "dislike",
                                  "feedback_at": day + timedelta(seconds=i)})  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_one_users_thousand_reactions_move_the_snapshot_by_at_most_the_cap(db, settings):
    cap = 50
    _feedback(db, 200, lambda i: f"user-{i % 40}")  # 40 ordinary users, 5 reactions each
    _feedback(db, 20, lambda i: None, start=200)  # anonymous searches

    def snapshot():
        capper = ReactionCap(cap)
        snap = build_snapshot(capper.apply(iter_feedback_rows(db, settings.max_text_chars)), 1000,
                              now=DAY + timedelta(days=2))  # fmt: skip
        return snap, capper.report()

    before, report = snapshot()
    assert len(before.pairs) == 220 and report["reactions_dropped"] == 0

    # One account likes 1,000 results in one day (the user_id comes from user_queries).
    qs, rs = [ObjectId() for _ in range(1000)], [ObjectId() for _ in range(1000)]
    db.user_queries.insert_many(
        [{"_id": q, "query_text": f"attack {i}", "user_id": "mallory", "created_at": DAY} for i, q in enumerate(qs)]
    )
    db.resources.insert_many([{"_id": r, "title": f"spam {i}"} for i, r in enumerate(rs)])
    db.inferences.insert_many([
        {"query_id": q, "resource_id": r, "rank": 1, "feedback": "like", "created_at": DAY,
         "feedback_at": DAY + timedelta(seconds=i)} for i, (q, r) in enumerate(zip(qs, rs, strict=True))
    ])  # fmt: skip
    after, report = snapshot()
    assert len(after.pairs) - len(before.pairs) == cap
    assert after.label_counts["like"] - before.label_counts["like"] == cap
    assert report == {"max_reactions_per_user_per_day": cap, "reactions_dropped": 1000 - cap,
                      "group_days_capped": 1, "user_days_capped": 1, "largest_group_day": 1000}  # fmt: skip
    kept = {p.query for p in after.pairs if p.query.startswith("attack")}
    assert kept == {f"attack {i}" for i in range(cap)}  # the day's first 50, not a random 50


def test_read_newest_first_day_by_day_the_cap_keeps_what_it_keeps_over_every_row():
    """Two users, four days, cap 2: capping each day once it is whole keeps the rows (and counts the drops)
    that capping every row at once does; each day comes with the first row of the next."""
    rows = [row(n, user=f"u{n % 2}", at=DAY + timedelta(days=n // 6, hours=n % 6)) for n in range(24)]
    stream = sorted(rows, key=lambda r: (r["feedback_at"], r["_id"]), reverse=True)
    daily, whole = ReactionCap(2), ReactionCap(2)
    units = list(daily.by_day(stream))
    assert sorted(r["_id"] for unit, _ in units for r in unit) == sorted(r["_id"] for r in whole.apply(rows))
    assert daily.report() == whole.report() and daily.report()["reactions_dropped"] == 8
    assert [len({day_of(r) for r in unit}) for unit, _ in units] == [1, 1, 1, 1]
    firsts = [next(r for r in stream if day_of(r) == day_of(unit[0])) for unit, _ in units]
    assert [following for _, following in units] == [*firsts[1:], None]
    # Cap 0: every row on its own, with the row after it.
    assert list(ReactionCap(0).by_day(stream[:2])) == [([stream[0]], stream[1]), ([stream[1]], None)]


def test_rows_read_after_the_stream_count_after_their_days_reactions():
    """Feedback the newest-first read cannot place (a feedback_at that is not a date) is read last: it
    uses what is left of its group's allowance for its day (by created_at), or a day of its own."""
    cap = ReactionCap(2)
    list(cap.by_day([row(2, at=DAY + timedelta(hours=2)), row(1, at=DAY + timedelta(hours=1))]))
    unplaced = {"feedback_at": "yesterday"}
    late = [
        {**row(3, at=DAY), **unplaced, "created_at": DAY},  # earlier that day, but read after it: no allowance left
        {**row(4, at=DAY), **unplaced, "created_at": DAY + timedelta(days=1)},  # another day
        {**row(5, at=DAY), **unplaced},  # no date at all: the undated day
        {**row(6, at=DAY), **unplaced},
        {**row(7, at=DAY), **unplaced},
    ]
    assert [r["_id"] for r in cap.rest(late)] == ["i0004", "i0005", "i0006"]
    assert cap.report()["reactions_dropped"] == 2 and cap.report()["group_days_capped"] == 2
