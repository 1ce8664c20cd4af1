"""The guard's comparison kept as running sums: equal to a full recomputation whatever the feedback does,
and a refresh's reads bounded by what changed (real SecantusDB; commands counted, never timed)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import MongoClient, monitoring

from eduranker import champion
from eduranker.store import ensure_indexes, versions
from eduranker.store.clock import server_now
from eduranker.store.online import ensure_online_indexes, impressions, live_counts
from producer.comparison import add, contribution, from_sums
from producer.guard import Comparison, Impression, compare
from producer.live_comparison import refresh_sums
from producer.online_refresh import impression_of, refresh_online
from tests.fake_versions import make_version

FIRST, SECOND = "v0003", "v0002"


def same(got: Comparison, expected: Comparison) -> None:
    assert (got.mode, got.champion, got.baseline) == (expected.mode, expected.champion, expected.baseline)
    assert (got.impressions, got.feedback, got.clusters) == (expected.impressions, expected.feedback, expected.clusters)
    assert (got.wins, got.losses, got.ties, got.rates) == (
        expected.wins,
        expected.losses,
        expected.ties,
        expected.rates,
    )
    if expected.effect is None:
        assert got.effect is None
        return
    assert got.effect is not None
    assert (got.effect.clusters, got.effect.units) == (expected.effect.clusters, expected.effect.units)
    assert got.effect.estimate == pytest.approx(expected.effect.estimate, rel=1e-9, abs=1e-12)
    assert got.effect.variance == pytest.approx(expected.effect.variance, rel=1e-9, abs=1e-12)


# ---- pure: the sums rebuild what `compare` makes of the impressions ---------------------------------


def _random_impressions(rng: random.Random, n: int, shapes: list[frozenset]) -> list[Impression]:
    out = []
    for i in range(n):
        served = rng.choice(shapes)
        likes = {v: rng.randint(0, 2) for v in served if rng.random() < 0.7}
        dislikes = {v: rng.randint(0, 2) for v in served if rng.random() < 0.5}
        cluster = f"user:{rng.randint(0, n // 4)}" if rng.random() < 0.8 else f"impression:{i}"
        out.append(Impression(cluster, served, likes, dislikes))
    return out


@pytest.mark.parametrize(
    ("seed", "shapes"),
    [
        (1, [frozenset({FIRST, SECOND}), frozenset({FIRST}), frozenset({SECOND})]),  # interleaving wins
        (2, [frozenset({FIRST}), frozenset({SECOND}), frozenset({FIRST, "v0001"})]),  # holdback
        (3, [frozenset({FIRST}), frozenset({FIRST, "v0001"})]),  # nothing to compare with
        (4, [frozenset({SECOND}), frozenset({"v0001"})]),  # the holdback alone
        (5, [frozenset({FIRST, SECOND})]),
    ],
)
def test_sums_per_cluster_give_the_comparison_of_the_impressions(seed, shapes):
    rng = random.Random(seed)
    for n in (0, 1, 7, 300):
        imps = _random_impressions(rng, n, shapes)
        clusters: dict[str, dict[str, int]] = {}
        for imp in imps:
            add(clusters.setdefault(imp.cluster, {}), contribution(imp, FIRST, SECOND))
        same(from_sums(clusters.values(), FIRST, SECOND), compare(imps, FIRST, SECOND))


def test_a_changed_impression_moves_its_cluster_by_the_difference():
    before = Impression("user:a", frozenset({FIRST, SECOND}), {FIRST: 2}, {SECOND: 1})
    after = Impression("user:a", frozenset({FIRST, SECOND}), {}, {FIRST: 1, SECOND: 1})
    sums = contribution(before, FIRST, SECOND)
    assert sums == {"i_n": 1, "i_credit": 1, "i_win": 1, "i_fb": 3, "t1_likes": 2, "t1_fb": 2, "t2_fb": 1}
    add(sums, contribution(before, FIRST, SECOND), -1)
    add(sums, contribution(after, FIRST, SECOND))
    assert {k: v for k, v in sums.items() if v} == contribution(after, FIRST, SECOND)
    assert contribution(Impression("user:a", frozenset({FIRST, SECOND})), FIRST, SECOND) == {}


# ---- on a real server ------------------------------------------------------------------------------


class Stream:
    """A random stream of searches and reactions, written the way the search API writes them."""

    SHAPES = [[FIRST, SECOND, SECOND, FIRST], [FIRST] * 3, [SECOND] * 3, [FIRST, "v0001", FIRST]]

    def __init__(self, db, since, seed: int, users: int = 40):
        self.db, self.since, self.rng, self.users = db, since, random.Random(seed), users
        self.results: list[ObjectId] = []
        self.reacted: dict[ObjectId, ObjectId] = {}  # results inserted with a reaction: their search
        self.served_deleted: Counter = Counter()  # results deleted since `since`, per version

    def searches(self, n: int, *, with_feedback: float = 0.5) -> None:
        queries, results = [], []
        for _ in range(n):
            at = self.since + timedelta(seconds=1) if self.rng.random() < 0.9 else self.since - timedelta(hours=1)
            query = {"_id": ObjectId(), "query_text": "q", "created_at": at}
            if self.rng.random() < 0.8:
                query["user_id"] = f"user-{self.rng.randrange(self.users)}"
            queries.append(query)
            for rank, version in enumerate(self.rng.choice(self.SHAPES), start=1):
                doc = {"_id": ObjectId(), "query_id": query["_id"], "resource_id": ObjectId(), "rank": rank,
                       "model_version": version, "created_at": at}  # fmt: skip
                if self.rng.random() < with_feedback:  # an insert that already carries its reaction
                    doc.update(feedback=self.rng.choice(["like", "dislike"]), feedback_at=at)
                    self.reacted[doc["_id"]] = query["_id"]
                results.append(doc)
        self.db.user_queries.insert_many(queries)
        self.db.inferences.insert_many(results)
        self.results += [doc["_id"] for doc in results]

    def react(self, n: int) -> None:
        """Set, change (like -> dislike) and remove reactions; delete a few results."""
        for inference in self.rng.sample(self.results, min(n, len(self.results))):
            roll = self.rng.random()
            if roll < 0.55:
                value = self.rng.choice(["like", "dislike"])
                self.db.inferences.update_one(
                    {"_id": inference}, {"$set": {"feedback": value, "feedback_at": self.since}}
                )
            elif roll < 0.9:
                self.db.inferences.update_one({"_id": inference}, {"$unset": {"feedback": ""}})
            else:
                doc = self.db.inferences.find_one_and_delete({"_id": inference})
                self.results.remove(inference)
                if doc["created_at"] >= self.since:
                    self.served_deleted[doc["model_version"]] += 1


def _full(db, since):
    return compare([impression_of(r) for r in impressions(db, [FIRST, SECOND], since)], FIRST, SECOND)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_incremental_figures_equal_a_full_recomputation(db, seed):
    ensure_indexes(db)
    ensure_online_indexes(db)
    since = server_now(db) - timedelta(minutes=5)
    stream = Stream(db, since, seed)
    stream.searches(80)
    sums = refresh_sums(db, FIRST, SECOND, since, impression_of)
    assert sums.rebuilt
    same(from_sums(sums.clusters, FIRST, SECOND), _full(db, since))
    for look in range(6):
        stream.searches(15, with_feedback=0.3 if look % 2 else 0.0)
        stream.react(40)
        sums = refresh_sums(db, FIRST, SECOND, since, impression_of)
        assert not sums.rebuilt and sums.events > 0
        same(from_sums(sums.clusters, FIRST, SECOND), _full(db, since))
        for version, side in ((FIRST, "1"), (SECOND, "2")):
            counts = live_counts(db, version, since)
            assert (sums.totals.get(f"t{side}_likes", 0), sums.totals.get(f"t{side}_fb", 0)) == (
                counts["likes"], counts["feedback"]
            )  # fmt: skip
            # Served: counted as results arrive; a deleted one stays counted until a full recomputation.
            assert sums.totals.get(f"s{side}_served", 0) == counts["served"] + stream.served_deleted[version]
    assert refresh_sums(db, FIRST, SECOND, since, impression_of).events == 0  # nothing changed since


class Reads(monitoring.CommandListener):
    """Commands per (name, collection), and the documents they returned."""

    def __init__(self) -> None:
        self.commands: Counter = Counter()
        self.documents: Counter = Counter()
        self._collection: dict[int, str] = {}

    def started(self, event):
        collection = event.command.get(event.command_name)
        collection = event.command.get("collection") if event.command_name == "getMore" else collection
        self._collection[event.request_id] = str(collection)
        self.commands[(event.command_name, str(collection))] += 1

    def succeeded(self, event):
        collection = self._collection.pop(event.request_id, "?")
        cursor = event.reply.get("cursor") or {}
        self.documents[collection] += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event):
        self._collection.pop(event.request_id, None)

    def clear(self) -> None:
        self.commands.clear()
        self.documents.clear()


@pytest.mark.integration
def test_a_refresh_reads_what_changed_since_the_last_not_everything_since_the_promotion(db, settings):
    """The same 20 changed reactions, refreshed after 300 and after 1,800 searches since the promotion:
    the same commands, and the results read are those of the 20 searches touched."""
    ensure_indexes(db)
    ensure_online_indexes(db)
    for v in ("v0002", "v0003"):
        make_version(settings.models_dir, v)
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}", "metrics": {"before": {}, "after": {}}})
        champion.promote(db, settings.models_dir, v, by="test", reason="test")
    since = versions.get_version(db, FIRST)["promoted_at"]
    stream = Stream(db, since, seed=9, users=100)
    stream.SHAPES = [[FIRST, SECOND, SECOND, FIRST]]  # every search: four results, interleaved
    reads = Reads()
    client = MongoClient(settings.mongodb_url, tz_aware=True, event_listeners=[reads])
    counted = client[settings.mongodb_db]
    observed = []
    for searches in (300, 1500):
        stream.searches(searches, with_feedback=0.6)
        refresh_online(counted, settings)  # catches up with the new searches
        touched = stream.rng.sample(sorted(stream.reacted), 20)
        for inference in touched:  # 20 reactions flipped, in 20 different searches or fewer
            doc = db.inferences.find_one({"_id": inference})
            flipped = "dislike" if doc["feedback"] == "like" else "like"
            db.inferences.update_one({"_id": inference}, {"$set": {"feedback": flipped}})
        searches_touched = len({stream.reacted[i] for i in touched})
        reads.clear()
        refresh_online(counted, settings)
        observed.append((dict(reads.commands), dict(reads.documents), searches_touched))
    client.close()
    (commands_small, docs_small, touched_small), (commands_large, docs_large, touched_large) = observed
    # Reading the per-cluster sums costs the clusters (users, and an anonymous cluster per hour: a run
    # across an hour's turn has one more), so its batches may differ; every other command is the same.
    for commands in (commands_small, commands_large):
        commands.pop(("getMore", "online_clusters"), None)
    assert commands_small == commands_large, (commands_small, commands_large)
    # The changes themselves (20), their searches (20 ids), those searches' 4 results each: never the
    # 1,800 searches' results.
    assert docs_large["inferences"] <= 20 + 20 + 4 * touched_large, docs_large
    assert docs_small["inferences"] <= 20 + 20 + 4 * touched_small, docs_small
    assert docs_large["user_queries"] <= touched_large
    assert docs_large["online_clusters"] <= 100 + 0.2 * 1800  # one document per cluster: users, anonymous searches
