"""Metrics of scores against labels: classification at 0.5 and ranking per query. Pure numpy/sklearn."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "ndcg@10", "mrr")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def ndcg_at_k(labels_by_score: Sequence[float], k: int) -> float:
    """NDCG@k of one query's labels listed in descending score order (binary or graded gains)."""
    gains = np.asarray(labels_by_score, dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, gains.size + 2))
    dcg = float(np.sum(gains[:k] * discounts[:k]))
    ideal = np.sort(gains)[::-1]
    idcg = float(np.sum(ideal[:k] * discounts[:k]))
    return dcg / idcg if idcg > 0 else math.nan


def reciprocal_rank(labels_by_score: Sequence[float]) -> float:
    for rank, label in enumerate(labels_by_score, start=1):
        if label > 0:
            return 1.0 / rank
    return math.nan


def ranked_labels(labels: Sequence[float], scores: Sequence[float], queries: Sequence[Any]) -> dict[Any, list[float]]:
    """Each rankable query's labels in descending score order: queries with two or more judged documents
    and at least one like. Ties are broken pessimistically (dislikes first), so a constant scorer earns no
    credit."""
    by_query: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for label, score, query in zip(labels, scores, queries, strict=True):
        by_query[query].append((float(score), float(label)))
    return {
        query: [label for _, label in sorted(judged, key=lambda t: (-t[0], t[1]))]
        for query, judged in by_query.items()
        if len(judged) >= 2 and any(label > 0 for _, label in judged)
    }


def ranking_metrics(labels: Sequence[float], scores: Sequence[float], queries: Sequence[str]) -> dict[str, Any]:
    """NDCG@10 and MRR averaged over the rankable queries."""
    ranked = ranked_labels(labels, scores, queries).values()
    ndcgs = [ndcg_at_k(ordered, 10) for ordered in ranked]
    rrs = [reciprocal_rank(ordered) for ordered in ranked]
    return {
        "ndcg@10": float(np.mean(ndcgs)) if ndcgs else None,
        "mrr": float(np.mean(rrs)) if rrs else None,
        "ranked_queries": len(ndcgs),
    }


def per_query_ndcg(
    labels: Sequence[float], scores: Sequence[float], query_index: np.ndarray, n_queries: int
) -> np.ndarray:
    """NDCG@10 of each query (by index), NaN where it is not rankable."""
    result = np.full(n_queries, np.nan)
    for q, ordered in ranked_labels(labels, scores, [int(q) for q in query_index]).items():
        result[q] = ndcg_at_k(ordered, 10)
    return result


def compute_metrics(
    labels: Sequence[float], scores: Sequence[float], queries: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """All metrics the registry stores, from probability scores in [0, 1]."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    predicted = (s >= threshold).astype(int)
    both_classes = len(set(y.tolist())) == 2
    result: dict[str, Any] = {
        "n": int(y.size),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "roc_auc": _none_if_nan(skm.roc_auc_score(y, s)) if both_classes else None,
        "average_precision": _none_if_nan(skm.average_precision_score(y, s)) if both_classes else None,
        "confusion_matrix": skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
    }
    result.update(ranking_metrics(labels, scores, queries))
    return result
