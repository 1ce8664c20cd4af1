"""The evidence gate: a paired bootstrap over held-out queries decides, or refuses to."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from eduranker.pipeline.bootstrap import paired_bootstrap
from eduranker.pipeline.evaluation import weighted_auc
from eduranker.pipeline.gate import GateRule, PairedScores, decide_promotion

RULE = GateRule(min_improvement=0.005, confidence=0.95, samples=1000, min_pairs=40, min_queries=8, seed=0,
                max_regression=0.02, slice_min_pairs=100)  # fmt: skip


def comparison(n_queries, per_query, champion_skill, candidate_skill, seed=0, flip_candidate=False):
    """Scores = skill × label + noise: skill 0 ranks at random, 3 almost perfectly."""
    rng = np.random.default_rng(seed)
    labels = np.tile([1.0, 0.0], n_queries * per_query // 2 + 1)[: n_queries * per_query]
    queries = [f"q{i // per_query}" for i in range(len(labels))]
    signed = -labels if flip_candidate else labels
    champion = champion_skill * labels + rng.normal(size=len(labels))
    candidate = candidate_skill * signed + rng.normal(size=len(labels))
    return PairedScores(labels.tolist(), champion.tolist(), candidate.tolist(), queries)


@pytest.mark.parametrize(
    "heldout,reference,promote,refused,reason",
    [
        (comparison(12, 5, 0.0, 3.0), None, True, False, "lower bound clears +0.005 (clears the bar)"),
        (comparison(12, 5, 1.0, 1.0, seed=1), None, False, False, "(within the noise)"),
        (comparison(12, 5, 1.5, 1.0), None, False, False, "(within the noise)"),  # worse, not significantly
        (comparison(40, 5, 3.0, 0.5), None, False, False, "whole interval lies below 0 (significantly worse)"),
        (comparison(6, 4, 0.0, 3.0), None, False, True, "24 pairs from 6 queries"),
        (comparison(20, 1, 0.0, 3.0), None, False, True, "20 pairs from 20 queries"),
        (comparison(4, 12, 0.0, 3.0), None, False, True, "48 pairs from 4 queries"),
        # The candidate learned the opposite on the champion's frozen pairs: rejected whatever it gains.
        (comparison(12, 5, 0.0, 3.0), comparison(12, 5, 2.0, 2.0, flip_candidate=True), False, False, "frozen"),
        # On the frozen pairs a candidate as good as the champion is not held back.
        (comparison(12, 5, 0.0, 3.0), comparison(12, 5, 2.0, 2.0, seed=3), True, False, "clears"),
    ],
)
def test_gate_table(heldout, reference, promote, refused, reason):
    decision = decide_promotion(heldout, RULE, reference)
    assert (decision.promote, decision.refused) == (promote, refused), decision.reason
    assert reason in decision.reason


def test_one_class_held_out_is_refused_with_a_reason():
    c = comparison(12, 5, 0.0, 3.0)
    decision = decide_promotion(PairedScores([1.0] * 60, c.champion, c.candidate, c.queries), RULE)
    assert decision.refused and "one class" in decision.reason


def test_the_reason_names_the_interval_and_the_evidence_is_stored():
    decision = decide_promotion(comparison(12, 5, 0.0, 3.0), RULE)
    auc = decision.evidence["intervals"]["roc_auc"]
    assert auc["low"] < auc["delta"] < auc["high"] and auc["confidence"] == 0.95
    assert f"{auc['low']:+.4f}" in decision.reason and "60 pairs / 12 queries" in decision.reason
    assert decision.evidence["intervals"]["ndcg@10"]["delta"] is not None


def test_decisions_are_reproducible_and_the_seed_is_the_only_randomness():
    c = comparison(10, 6, 0.5, 1.2, seed=7)
    assert decide_promotion(c, RULE).evidence == decide_promotion(c, RULE).evidence
    other_seed = GateRule(**{**RULE.__dict__, "seed": 1})
    assert decide_promotion(c, other_seed).evidence["intervals"] != decide_promotion(c, RULE).evidence["intervals"]


def test_weighted_auc_equals_sklearn_with_ties_and_with_repeated_pairs():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    positive = rng.random(40) < 0.4
    assert weighted_auc(scores, positive, np.ones((1, 40)))[0] == pytest.approx(roc_auc_score(positive, scores))
    counts = rng.integers(0, 3, size=40)
    repeated = np.repeat(np.arange(40), counts)
    expected = roc_auc_score(positive[repeated], scores[repeated])
    assert weighted_auc(scores, positive, counts[None, :])[0] == pytest.approx(expected)


def test_the_interval_narrows_as_queries_are_added():
    def width(n_queries):
        c = comparison(n_queries, 5, 1.0, 1.5)
        auc = paired_bootstrap(c.labels, c.champion, c.candidate, c.queries, samples=500, confidence=0.95, seed=0)
        return auc["roc_auc"].high - auc["roc_auc"].low

    assert width(80) < 0.6 * width(10)


def sliced(parts):
    """One comparison made of slices: (name, n_queries, champion_skill, candidate_skill) each."""
    labels, champion, candidate, queries, slices = [], [], [], [], []
    for k, (name, n_queries, a, b) in enumerate(parts):
        c = comparison(n_queries, 6, a, b, seed=k)
        labels += c.labels
        champion += c.champion
        candidate += c.candidate
        queries += [f"{name}:{q}" for q in c.queries]
        slices += [name] * len(c.labels)
    return PairedScores(labels, champion, candidate, queries, slices)


SLICED = GateRule(**{**RULE.__dict__, "slice_min_pairs": 60})


@pytest.mark.parametrize(
    "parts,promote,worse,judged",
    [
        # Better everywhere: promoted, every slice judged.
        ([("math", 20, 0.0, 3.0), ("art", 20, 0.0, 3.0)], True, [], {"math", "art"}),
        # Much better on average but clearly worse on one slice: the average does not hide it.
        ([("math", 30, 0.0, 3.0), ("biology", 30, 0.0, 3.0), ("art", 20, 3.0, 0.3)], False, ["art"],
         {"math", "biology", "art"}),
        # The worse slice is too small to be judged alone: the average decides.
        ([("math", 30, 0.0, 3.0), ("biology", 30, 0.0, 3.0), ("art", 5, 3.0, 0.3)], True, [], {"math", "biology"}),
    ],
)  # fmt: skip
def test_slices_table(parts, promote, worse, judged):
    decision = decide_promotion(sliced(parts), SLICED)
    assert decision.promote == promote, decision.reason
    assert set(decision.evidence["slices"]) == judged
    for name in worse:
        assert f"significantly worse on slice(s) {name}" in decision.reason
    confidences = {v["confidence"] for v in decision.evidence["slices"].values()}
    assert confidences == {1 - 0.05 / len(judged)}  # Bonferroni over the judged slices


def test_pairs_without_slices_are_judged_on_the_average_alone():
    decision = decide_promotion(comparison(12, 5, 0.0, 3.0), SLICED)
    assert decision.promote and decision.evidence["slices"] == {}


@pytest.mark.parametrize("may_have_seen,said", [(True, True), (False, False)])
def test_the_reason_says_when_the_champion_may_have_seen_the_held_out_pairs(may_have_seen, said):
    fairness = {"champion_may_have_seen": may_have_seen, "excluded_champion_trained": 0}
    decision = decide_promotion(comparison(12, 5, 0.0, 3.0), RULE, fairness=fairness)
    assert ("may have trained on some of these held-out pairs" in decision.reason) == said
    assert decision.evidence["fairness"] == fairness
