import math

import pytest

from eduranker.pipeline.evaluation import compute_metrics, ndcg_at_k, reciprocal_rank


def test_classification_metrics_match_hand_computation():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    scores = [0.9, 0.8, 0.4, 0.7, 0.2, 0.1, 0.3, 0.6]
    m = compute_metrics(labels, scores, ["a"] * 8)
    # At 0.5: predicted positive = {0.9, 0.8, 0.7, 0.6}: TP=3 (0.9, 0.8, 0.6), FP=1 (0.7), FN=1 (0.4), TN=3.
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # Of 16 (positive, negative) pairs, the positive outscores the negative in 14: 0.4 loses to 0.7 and 0.6 < 0.7.
    assert m["roc_auc"] == pytest.approx(14 / 16)
    # Ranked: 0.9+ 0.8+ 0.7- 0.6+ 0.4+ → precision at each positive: 1, 1, 3/4, 4/5.
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 5) / 4)


def test_one_class_leaves_rank_metrics_undefined():
    m = compute_metrics([1, 1], [0.2, 0.9], ["a", "b"])
    assert m["roc_auc"] is None and m["average_precision"] is None


def test_ndcg_and_reciprocal_rank_by_hand():
    # Relevant at ranks 2 and 3: DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3).
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k([0, 1, 1], 10) == pytest.approx(expected)
    assert reciprocal_rank([0, 0, 1]) == pytest.approx(1 / 3)
    assert ndcg_at_k([1, 0, 0], 10) == pytest.approx(1.0)


def test_ranking_metrics_use_only_queries_with_two_judged_documents_and_a_like():
    labels = [1, 0, 0, 1, 0, 0]
    scores = [0.1, 0.9, 0.5, 0.8, 0.3, 0.4]
    queries = ["q1", "q1", "q2", "q3", "q3", "q4"]  # q2 has one doc, q4 one doc
    m = compute_metrics(labels, scores, queries)
    assert m["ranked_queries"] == 2
    # q1: like ranked 2nd → RR 1/2, NDCG 1/log2(3); q3: like first → 1 and 1.
    assert m["mrr"] == pytest.approx((0.5 + 1) / 2)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)


def test_ties_earn_no_credit():
    m = compute_metrics([0, 1], [0.5, 0.5], ["q", "q"])
    assert m["mrr"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_every_score_metric_equals_scikit_learns_with_ties_and_empty_classes(seed):
    """The metrics are computed with numpy alone; scikit-learn (a test dependency) is the reference."""
    import numpy as np
    from sklearn import metrics as skm

    from eduranker.pipeline.evaluation import roc_points

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(float)
    scores = np.round(rng.random(n), int(rng.integers(1, 3)))  # one or two decimals: many ties
    if seed == 4:
        scores = np.full(n, 0.2)  # nothing predicted "like": precision divides by zero
    if seed == 5:
        labels[:] = 0.0  # no like held out: recall divides by zero, the ranking scores are undefined
    m = compute_metrics(labels.tolist(), scores, [str(i % 7) for i in range(n)])
    y, predicted = labels.astype(int), (scores >= 0.5).astype(int)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    for name in ("precision", "recall", "f1"):
        assert m[name] == pytest.approx(getattr(skm, f"{name}_score")(y, predicted, zero_division=0)), name
    if len(set(y.tolist())) < 2:
        assert m["roc_auc"] is None and m["average_precision"] is None
        return
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, scores))
    fpr, tpr = roc_points(labels, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
