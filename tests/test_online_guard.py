"""Live figures per version and the online guard: a sequential test on clustered data that rolls back
a champion users like less (holdback or interleaving), and keeps its error rate however often it looks."""

import math
from datetime import timedelta

import numpy as np
import pytest
from bson import ObjectId

from console import cli
from eduranker import champion
from eduranker.settings import Settings
from eduranker.store import ensure_indexes, versions
from producer.guard import Impression, LiveRate, Mode, compare, describe, judge
from producer.online_refresh import refresh_online
from producer.sequential import Clustered, log_mixture_ratio, radius, ratio_estimate, sequential_test
from tests.fake_versions import champion_link, make_version

# ---- the statistics (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num,den,estimate,variance",
    [
        ([1, 2, 3], [2, 2, 2], 1.0, 3 / 2 * ((1 - 2) ** 2 + 0 + (3 - 2) ** 2) / 36),
        ([5, 0], [5, 5], 0.5, 2 * (2.5**2 + 2.5**2) / 100),  # two users who disagree: a wide variance
        ([1, 1], [2, 2], 0.5, 0.0),
        ([3], [4], 0.75, math.inf),  # one cluster: nothing to judge its spread by
        ([], [], 0.0, math.inf),
    ],
)
def test_ratio_estimate_table(num, den, estimate, variance):
    got = ratio_estimate(num, den)
    assert got.estimate == pytest.approx(estimate) and got.variance == pytest.approx(variance)


def test_clustering_widens_the_variance_when_users_agree_with_themselves():
    rng = np.random.default_rng(0)
    rates = rng.beta(3, 2, 50)  # users differ; each user's ten reactions follow their own rate
    likes = [int(rng.binomial(10, p)) for p in rates]
    by_user = ratio_estimate(likes, [10] * 50)
    flat = [1] * sum(likes) + [0] * (500 - sum(likes))  # the same reactions treated as independent
    by_reaction = ratio_estimate(flat, [1] * 500)
    assert by_user.estimate == pytest.approx(by_reaction.estimate)
    assert by_user.variance > 2 * by_reaction.variance


def test_the_bound_and_the_evidence_agree_on_every_decision():
    tau2, alpha = 0.05**2, 0.01
    for estimate in np.linspace(-0.2, 0.2, 41):
        for variance in (1e-5, 1e-4, 1e-3, 1e-2):
            test = sequential_test(Clustered(float(estimate), variance, 100, 1000), tau2=tau2, alpha=alpha)
            evidence = log_mixture_ratio(float(estimate), variance, tau2) >= math.log(1 / alpha)
            assert test.worse == (evidence and estimate < 0)
            assert test.high - test.estimate == pytest.approx(radius(variance, tau2, alpha))
    assert radius(math.inf, tau2, alpha) == math.inf


def _looks(rng, runs, n, looks, rule):
    """Runs of `n` iid cluster means under "no difference", checked `looks` times; how many reject."""
    rejected = 0
    for _ in range(runs):
        x = rng.normal(0.0, 1.0, n)
        cum, cum2 = np.cumsum(x), np.cumsum(x * x)
        for k in np.linspace(20, n, looks).astype(int):
            mean = cum[k - 1] / k
            var = (cum2[k - 1] / k - mean * mean) * k / (k - 1) / k
            if rule(mean, var):
                rejected += 1
                break
    return rejected


def test_looking_often_keeps_the_sequential_error_rate_but_not_the_fixed_sample_one():
    rng = np.random.default_rng(5)

    def sequential(mean, var):
        return sequential_test(Clustered(mean, var, 2, 2), tau2=0.05**2, alpha=0.05).worse

    def fixed(mean, var):
        return mean / math.sqrt(var) < -1.645  # one-sided 5% z-test at each look

    runs = 300
    assert _looks(rng, runs, 2000, 200, sequential) / runs <= 0.05
    assert _looks(rng, runs, 2000, 200, fixed) / runs > 0.15  # the old way: several times its nominal 5%


# ---- the comparison and the decision (pure) --------------------------------------------------------


def _imp(user, served, likes=None, dislikes=None):
    return Impression(user, frozenset(served), likes or {}, dislikes or {})


def test_interleaved_impressions_are_credited_to_the_version_whose_documents_drew_more_likes():
    imps = [
        _imp("u1", {"v2", "v1"}, {"v2": 2}, {"v1": 1}),  # champion wins
        _imp("u1", {"v2", "v1"}, {"v2": 1, "v1": 1}),  # tie
        _imp("u2", {"v2", "v1"}, {"v1": 1}),  # champion loses
        _imp("u3", {"v2", "v1"}, {}, {"v2": 1}),  # a dislike counts against: loses
        _imp("u3", {"v2", "v1"}),  # no feedback: not an impression the guard counts
        _imp("u4", {"v2"}, {"v2": 1}),  # served by the champion alone: not interleaved
    ]
    c = compare(imps, "v2", "v1")
    assert c.mode is Mode.INTERLEAVE and (c.impressions, c.wins, c.losses, c.ties) == (4, 1, 2, 1)
    assert c.feedback == 7 and c.clusters == (3, 3)
    assert c.effect is not None and c.effect.estimate == pytest.approx(-0.25)


def test_without_interleaving_the_holdback_is_compared_by_user():
    imps = [_imp(f"u{i}", {"v2"}, {"v2": 3}, {"v2": 1}) for i in range(4)]
    imps += [_imp(f"h{i}", {"v1"}, {"v1": 1}, {"v1": 1}) for i in range(2)]
    c = compare(imps, "v2", "v1")
    assert c.mode is Mode.HOLDBACK and c.rates == (LiveRate("v2", 16, 12), LiveRate("v1", 4, 2))
    assert c.effect is not None and c.effect.estimate == pytest.approx(0.25) and c.clusters == (4, 2)
    alone = compare(imps[:4], "v2", "v1")
    assert alone.mode is Mode.NONE
    assert not judge(alone, min_feedback=10, confidence=0.99).rollback


def _interleaved_traffic(users, per_user, p_champion, p_baseline, seed):
    rng = np.random.default_rng(seed)
    imps = []
    for u in range(users):
        for _ in range(per_user):
            likes, dislikes = {}, {}
            for version, p in (("v2", p_champion), ("v1", p_baseline)):
                reactions = int(rng.integers(0, 3))
                liked = int(rng.binomial(reactions, p))
                likes[version], dislikes[version] = liked, reactions - liked
            imps.append(_imp(f"u{u}", {"v2", "v1"}, likes, dislikes))
    return imps


@pytest.mark.parametrize(
    "users,searches,p_champion,p_baseline,rollback,reason",
    [
        (150, 4, 0.3, 0.7, True, "champion worse with users"),
        (150, 4, 0.6, 0.6, False, "no decision yet"),
        (150, 4, 0.8, 0.4, False, "no decision yet"),  # better is never rolled back
        (50, 10, 0.3, 0.7, False, "waiting for 100 users"),  # plenty of feedback, from too few users
        (3, 10, 0.3, 0.7, False, "waiting for 200 feedbacks on interleaved results"),
    ],
)
def test_guard_table(users, searches, p_champion, p_baseline, rollback, reason):
    c = compare(_interleaved_traffic(users, searches, p_champion, p_baseline, seed=users), "v2", "v1")
    decision = judge(c, min_feedback=200, confidence=0.99)
    assert decision.rollback is rollback and reason in decision.reason


def test_the_figures_say_how_far_the_comparison_is_from_a_decision():
    c = compare(_interleaved_traffic(150, 4, 0.55, 0.6, seed=1), "v2", "v1")
    decision = judge(c, min_feedback=200, confidence=0.99)
    f = decision.figures
    assert not decision.rollback and f["low"] < f["estimate"] < f["high"] and f["high"] > 0
    assert f["log_evidence_needed"] == pytest.approx(math.log(100))
    line = describe(f)
    assert 400 < f["impressions"] < 600  # the searches without any reaction are not counted
    assert line.startswith(f"interleaving v2 vs v1: {f['impressions']} impressions ({f['feedback']} feedbacks)")
    assert "99% always-valid interval" in line
    assert f"evidence {f['log_evidence']:.2f} of 4.61" in line


# ---- on a real server ------------------------------------------------------------------------------


def _serve(db, at, rng, *, versions_of, like_rate, users, searches, anonymous=0.0, first_user=0):
    """Searches by `users` users; each serves one result per entry of `versions_of` (the version that
    contributed it), and each result gets a reaction with probability 0.6."""
    queries, results = [], []
    for u in range(first_user, first_user + users):
        for _ in range(searches):
            query = {"_id": ObjectId(), "query_text": "q", "created_at": at}
            if rng.random() >= anonymous:
                query["user_id"] = f"user-{u}"
            queries.append(query)
            for rank, version in enumerate(versions_of, start=1):
                doc = {"query_id": query["_id"], "resource_id": ObjectId(), "rank": rank, "model_version": version,
                       "created_at": at}  # fmt: skip
                if rng.random() < 0.6:
                    doc["feedback"] = "like" if rng.random() < like_rate[version] else "dislike"
                results.append(doc)
    db.user_queries.insert_many(queries)
    db.inferences.insert_many(results)


@pytest.fixture()
def promoted(db, settings):
    ensure_indexes(db)
    for v in ("v0001", "v0002"):
        make_version(settings.models_dir, v)
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}", "metrics": {"before": {}, "after": {}}})
    champion.promote(db, settings.models_dir, "v0001", by="test", reason="test")
    champion.promote(db, settings.models_dir, "v0002", by="test", reason="test")
    return versions.get_version(db, "v0002")["promoted_at"]


INTERLEAVED = ["v0002", "v0001", "v0001", "v0002"]


@pytest.mark.integration
def test_interleaved_results_the_champion_loses_roll_it_back_through_the_safe_switch(db, settings, promoted):
    rng = np.random.default_rng(1)
    after = promoted + timedelta(seconds=1)
    rates = {"v0002": 0.3, "v0001": 0.7}
    # Anonymous searches count as a cluster per hour (producer.online_refresh.cluster_key), not one each: the
    # 100-cluster floor is met by the users alone here.
    _serve(db, after, rng, versions_of=INTERLEAVED, like_rate=rates, users=130, searches=2, anonymous=0.2)
    decision = refresh_online(db, settings)
    assert decision is not None and decision.rollback
    assert versions.read_champion(db).version == "v0001" and champion_link(settings) == "v0001"
    demoted = versions.get_version(db, "v0002")
    assert demoted["status"] == "rolled_back" and demoted["guard_rolled_back"]
    assert demoted["history"][-1]["by"] == "online guard"
    figures = demoted["guard_decision"]
    assert f"interleaving v0002 vs v0001: {figures['impressions']} impressions" in demoted["rollback_reason"]
    assert 200 < figures["impressions"] <= 260  # searches with a reaction to either version's results
    assert figures["mode"] == "interleave" and figures["losses"] > 2 * figures["wins"]
    assert figures["high"] < 0 and figures["restored"] == "v0001" and len(demoted["guard_decisions"]) == 1
    assert 100 < figures["users"][0] < 135  # clustered by user_id; anonymous searches by their hour
    with pytest.raises(Exception, match="online guard"):  # never promoted again automatically
        versions.record_promotion(db, "v0002", by="job x", reason="x", expected_champion="v0001")
    champion.promote(db, settings.models_dir, "v0002", by="cli", reason="checked by hand")  # an operator may
    again = versions.get_version(db, "v0002")
    assert again["status"] == "champion" and again["history"][-1]["reason"] == "checked by hand"


@pytest.mark.integration
@pytest.mark.slow
def test_equal_quality_evaluated_many_times_is_never_rolled_back(db, settings, promoted, capsys):
    rng = np.random.default_rng(2)
    rates = {"v0002": 0.6, "v0001": 0.6}
    decisions, looks = [], 12  # each look reads all the searches since the promotion: the cost grows as looks²
    for look in range(looks):
        at = promoted + timedelta(seconds=1 + look)
        _serve(db, at, rng, versions_of=INTERLEAVED, like_rate=rates, users=24, searches=1, first_user=look * 18)
        decisions.append(refresh_online(db, settings))  # a quarter of the users come back at the next look
    assert all(d is not None and not d.rollback for d in decisions)
    judged = sum("no decision yet" in d.reason for d in decisions if d)
    # Judged at every look once 200 feedbacks and 100 users a side are in (the sixth look on).
    assert judged >= looks - 6, [d.reason for d in decisions if d]
    v2 = versions.get_version(db, "v0002")
    assert versions.read_champion(db).version == "v0002" and v2["status"] == "champion"
    assert v2["online"]["comparison"]["impressions"] == pytest.approx(24 * looks, abs=20)
    assert v2["online"]["holdback_salt"] == "v0002"
    cli.main(["status"], settings)
    out = capsys.readouterr().out
    assert "interleaving v0002 vs v0001" in out and "always-valid interval" in out


@pytest.mark.integration
def test_a_holdback_users_like_clearly_more_rolls_the_champion_back(db, settings, promoted, capsys):
    rng = np.random.default_rng(3)
    after = promoted + timedelta(seconds=1)
    rates = {"v0002": 0.3, "v0001": 0.75}
    _serve(
        db, promoted - timedelta(days=1), rng, versions_of=["v0001"], like_rate={"v0001": 0.1}, users=30, searches=5
    )  # fmt: skip  - before the promotion: not counted
    _serve(db, after, rng, versions_of=["v0002"] * 4, like_rate=rates, users=120, searches=1)
    _serve(db, after, rng, versions_of=["v0001"] * 4, like_rate=rates, users=120, searches=1, first_user=1000)
    decision = refresh_online(db, settings)
    assert decision is not None and decision.rollback
    demoted = versions.get_version(db, "v0002")
    figures = demoted["guard_decision"]
    assert figures["mode"] == "holdback" and all(100 <= n <= 120 for n in figures["users"])  # users who reacted
    assert "like rate v0002" in demoted["rollback_reason"] and "holdback v0001" in demoted["rollback_reason"]
    assert demoted["online"]["holdback"]["feedback"] == pytest.approx(120 * 4 * 0.6, rel=0.2)
    cli.main(["versions"], settings)
    table = capsys.readouterr().out
    assert "v0002 rolled back by the online guard: champion worse with users: holdback" in table


@pytest.mark.integration
def test_with_the_guard_off_it_only_reports(db, settings, promoted):
    rng = np.random.default_rng(4)
    after = promoted + timedelta(seconds=1)
    _serve(db, after, rng, versions_of=INTERLEAVED, like_rate={"v0002": 0.2, "v0001": 0.8}, users=120, searches=2)
    decision = refresh_online(db, Settings(**{**settings.__dict__, "online_guard": False}))
    assert decision is not None and decision.rollback  # it would, but does not
    assert versions.read_champion(db).version == "v0002"
