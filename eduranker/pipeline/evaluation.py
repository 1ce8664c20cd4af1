"""Metrics of scores against labels, in one registry: what is stored, shown and bootstrapped. Pure numpy:
each metric is a few lines here (tests/test_evaluation.py checks them against scikit-learn's), which
spares every worker process a second of importing scikit-learn.

`METRICS` is the one table: each `Metric` says how it is computed on the held-out set, how its change
between two models is resampled (for the gate's bootstrap, when it has one), which way is better and
whether `eduranker versions` gives it a column. The stored metrics documents, the report, the CLI, the
demo and the gate iterate it, so a new metric is one entry here (and its test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import numpy as np

# One query's labels in descending score order → its value (NaN where undefined).
PerQuery = Callable[[Sequence[float]], float]
# (model A, model B, query counts: resamples × queries) → B − A under each resample (NaN where undefined).
Change = Callable[["Scored", "Scored", np.ndarray], np.ndarray]


def _none_if_nan(value: float | None) -> float | None:
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
    by_query: dict[Any, list[tuple[float, float]]] = {}
    for label, score, query in zip(labels, scores, queries, strict=True):
        by_query.setdefault(query, []).append((float(score), float(label)))
    return {
        query: [label for _, label in sorted(judged, key=lambda t: (-t[0], t[1]))]
        for query, judged in by_query.items()
        if len(judged) >= 2 and any(label > 0 for _, label in judged)
    }


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC for each row of `weights` (pair multiplicities): the Mann–Whitney statistic with ties
    counted half, in one sort. NaN where a row has no positive or no negative weight."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores, pos = scores[order], positive[order]
    w = weights[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    neg_w = np.add.reduceat(w * ~pos, starts, axis=1)
    negatives_below = np.cumsum(neg_w, axis=1) - neg_w
    wins = (pos_w * (negatives_below + 0.5 * neg_w)).sum(axis=1)
    total = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: np.ndarray = np.where(total > 0, wins / np.where(total > 0, total, 1), np.nan)
    return result


@dataclass(frozen=True)
class Scored:
    """One model's scores on labelled pairs, with each pair's query as an index (shared by two models
    scored on the same pairs, so the bootstrap can resample queries for both at once)."""

    labels: np.ndarray  # float, 1.0 like / 0.0 dislike
    scores: np.ndarray  # probabilities in [0, 1]
    query_index: np.ndarray  # each pair's query, an index into range(n_queries)
    n_queries: int
    threshold: float = 0.5  # classification metrics predict "like" at or above it
    _per_query: dict[PerQuery, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        labels: Sequence[float],
        scores: Sequence[float] | np.ndarray,
        queries: Sequence[Any],
        threshold: float = 0.5,
    ) -> Scored:
        names, index = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
        return cls(np.asarray(labels, dtype=float), np.asarray(scores, dtype=float), index, len(names), threshold)

    def rescored(self, scores: Sequence[float] | np.ndarray) -> Scored:
        """Another model's scores on the same pairs."""
        return Scored(self.labels, np.asarray(scores, dtype=float), self.query_index, self.n_queries, self.threshold)

    @cached_property
    def y(self) -> np.ndarray:
        return self.labels.astype(int)

    @cached_property
    def positive(self) -> np.ndarray:
        return self.labels > 0.5

    @cached_property
    def predicted(self) -> np.ndarray:
        return (self.scores >= self.threshold).astype(int)

    @cached_property
    def confusion(self) -> np.ndarray:
        """[[true negatives, false positives], [false negatives, true positives]] at the threshold."""
        matrix = np.zeros((2, 2), dtype=int)
        np.add.at(matrix, (self.y, self.predicted), 1)
        return matrix

    @cached_property
    def both_classes(self) -> bool:
        return len(set(self.y.tolist())) == 2

    @cached_property
    def ranked(self) -> dict[int, list[float]]:
        """Each rankable query's labels in descending score order (`ranked_labels`), by query index."""
        return ranked_labels(self.labels.tolist(), self.scores.tolist(), self.query_index.tolist())

    def per_query(self, of_query: PerQuery) -> np.ndarray:
        """`of_query` of each query (by index), NaN where the query is not rankable; computed once."""
        if of_query not in self._per_query:
            values = np.full(self.n_queries, np.nan)
            for q, ordered in self.ranked.items():
                values[q] = of_query(ordered)
            self._per_query[of_query] = values
        return self._per_query[of_query]


def mean_over_queries(of_query: PerQuery) -> Callable[[Scored], float | None]:
    """A ranking metric's value: `of_query` averaged over the rankable queries (None if there is none)."""

    def value(scored: Scored) -> float | None:
        values = scored.per_query(of_query)
        defined = values[~np.isnan(values)]
        return float(np.mean(defined)) if defined.size else None

    return value


def change_over_queries(of_query: PerQuery) -> Change:
    """A ranking metric's change B − A under each resample: the mean over the drawn rankable queries of
    the per-query differences (the same queries are rankable for both: it depends on labels only)."""

    def change(a: Scored, b: Scored, counts: np.ndarray) -> np.ndarray:
        va, vb = a.per_query(of_query), b.per_query(of_query)
        defined = ~np.isnan(va) & ~np.isnan(vb)
        diff = np.where(defined, vb - va, 0.0)
        drawn = (counts * defined).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean: np.ndarray = np.where(drawn > 0, (counts * diff).sum(axis=1) / np.where(drawn > 0, drawn, 1), np.nan)
        return mean

    return change


def _auc_change(a: Scored, b: Scored, counts: np.ndarray) -> np.ndarray:
    """ROC-AUC over all pairs, each weighted by how often its query was drawn."""
    weights = counts[:, a.query_index]
    change: np.ndarray = weighted_auc(b.scores, b.positive, weights) - weighted_auc(a.scores, a.positive, weights)
    return change


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0  # scikit-learn's zero_division=0


def accuracy(scored: Scored) -> float | None:
    return float(np.mean(scored.y == scored.predicted)) if scored.y.size else None


def precision(scored: Scored) -> float | None:
    (_, fp), (_, tp) = scored.confusion
    return _share(tp, tp + fp)


def recall(scored: Scored) -> float | None:
    (_, _), (fn, tp) = scored.confusion
    return _share(tp, tp + fn)


def f1(scored: Scored) -> float | None:
    (_, fp), (fn, tp) = scored.confusion
    return _share(2 * tp, 2 * tp + fp + fn)


def roc_auc(scored: Scored) -> float | None:
    """Undefined (None) unless both classes are held out."""
    if not scored.both_classes:
        return None
    return _none_if_nan(float(weighted_auc(scored.scores, scored.positive, np.ones((1, scored.y.size)))[0]))


def _operating_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives counted at each distinct score, taken as the threshold, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, pos = scores[order], positive[order]
    last_of_tie = np.r_[ordered[1:] != ordered[:-1], True]
    return np.cumsum(pos)[last_of_tie], np.cumsum(~pos)[last_of_tie]


def average_precision(scored: Scored) -> float | None:
    """Precision at each threshold weighted by the recall it adds (scikit-learn's definition, no
    interpolation); undefined (None) unless both classes are held out."""
    if not scored.both_classes:
        return None
    tp, fp = _operating_points(scored.scores, scored.positive)
    recall_added = np.diff(np.r_[0, tp]) / tp[-1]
    return float(np.sum(recall_added * tp / (tp + fp)))


def roc_points(labels: np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's (false positive rates, true positive rates) from (0, 0), one point per distinct
    score; needs both classes."""
    positive = np.asarray(labels) > 0.5
    tp, fp = _operating_points(np.asarray(scores, dtype=float), positive)
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


@dataclass(frozen=True)
class Metric:
    """One held-out metric. `name` is its key in stored metrics documents and intervals."""

    name: str
    label: str  # how a person reads it: "ROC-AUC"
    value: Callable[[Scored], float | None]  # on the whole held-out set; None where undefined
    change: Change | None = None  # resampled change for the gate's bootstrap; None: no interval
    higher_is_better: bool = True
    column: bool = False  # a column of `eduranker versions` (a 100-column terminal holds a few)


# What `compute_metrics` stores beside the registered metrics: no metric may take these names.
STORED_BESIDE = ("n", "confusion_matrix", "ranked_queries")


class MetricRegistry:
    """The metrics, in the order they are shown, and the primary one the gate decides on."""

    def __init__(self, metrics: Iterable[Metric], *, primary: str):
        self._metrics: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)
        self._primary = self[primary]
        if self._primary.change is None or not self._primary.higher_is_better:
            raise ValueError(f"the gate's metric {primary} needs a resampled change and higher-is-better")

    def __iter__(self) -> Iterator[Metric]:
        return iter(tuple(self._metrics.values()))

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._metrics)

    @property
    def primary(self) -> Metric:
        return self._primary

    @property
    def bootstrapped(self) -> tuple[Metric, ...]:
        return tuple(m for m in self if m.change is not None)

    @property
    def columns(self) -> tuple[Metric, ...]:
        """The metrics `eduranker versions` shows after the primary's value, change and interval."""
        return tuple(m for m in self if m.column and m is not self._primary)

    def register(self, metric: Metric) -> Metric:
        if metric.name in self._metrics or metric.name in STORED_BESIDE:
            raise ValueError(f"metric {metric.name} is registered already (or stored beside the metrics)")
        self._metrics[metric.name] = metric
        return metric

    def unregister(self, name: str) -> None:
        if self._metrics[name] is self._primary:
            raise ValueError(f"{name} is the gate's metric")
        del self._metrics[name]


NDCG_AT_10: PerQuery = partial(ndcg_at_k, k=10)

METRICS = MetricRegistry(
    (
        Metric("accuracy", "accuracy", accuracy),
        Metric("precision", "precision", precision),
        Metric("recall", "recall", recall),
        Metric("f1", "F1", f1, column=True),
        Metric("roc_auc", "ROC-AUC", roc_auc, _auc_change),
        Metric("average_precision", "average precision", average_precision),
        Metric("ndcg@10", "NDCG@10", mean_over_queries(NDCG_AT_10), change_over_queries(NDCG_AT_10), column=True),
        Metric("mrr", "MRR", mean_over_queries(reciprocal_rank)),
    ),
    primary="roc_auc",
)


def compute_metrics(
    labels: Sequence[float], scores: Sequence[float] | np.ndarray, queries: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Every registered metric (None where undefined) and the counts the registry stores with them."""
    scored = Scored.of(labels, scores, queries, threshold)
    return {
        "n": int(scored.y.size),
        **{metric.name: metric.value(scored) for metric in METRICS},
        "confusion_matrix": scored.confusion.tolist(),
        "ranked_queries": len(scored.ranked),
    }
