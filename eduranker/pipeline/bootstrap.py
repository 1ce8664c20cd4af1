"""Paired bootstrap over queries: how sure are we that model B ranks better than model A?

Pairs of one query are not independent (one user, one intent), so queries are what is resampled: each
resample draws the held-out queries with replacement and scores both models on the same draw. The
spread of the difference over the draws gives a percentile confidence interval (the method of TFMA's
bootstrap intervals; DeLong's test would treat every pair as independent, too narrow here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from eduranker.pipeline.evaluation import per_query_ndcg


@dataclass(frozen=True)
class Interval:
    """The change B − A of one metric: its value on the held-out set and its bootstrap interval."""

    metric: str
    delta: float | None
    low: float | None
    high: float | None
    confidence: float
    samples: int  # resamples where the metric was defined on both models

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)

    def describe(self) -> str:
        if self.delta is None or self.low is None or self.high is None:
            return f"{self.metric} change undefined"
        return f"{self.metric} {self.delta:+.4f} [{self.confidence:.0%} CI {self.low:+.4f}, {self.high:+.4f}]"


# Elements (resamples × pairs) of one chunk of the weight matrix: ~32 MB of float64 at a time, so the
# bootstrap's memory stays flat however many held-out pairs and resamples there are.
CHUNK_ELEMENTS = 4_000_000


def resample_chunks(n_queries: int, samples: int, seed: int, rows: int) -> Iterator[np.ndarray]:
    """`resample_counts` `rows` resamples at a time: the same draws (one generator, read row by row)."""
    rng = np.random.default_rng(seed)
    for begin in range(0, samples, rows):
        count = min(rows, samples - begin)
        drawn = rng.integers(0, n_queries, size=(count, n_queries))
        flat = drawn + (np.arange(count) * n_queries)[:, None]
        yield np.bincount(flat.ravel(), minlength=count * n_queries).reshape(count, n_queries)


def resample_counts(n_queries: int, samples: int, seed: int) -> np.ndarray:
    """(samples × n_queries) how often each query is drawn in each resample; seeded, so reproducible."""
    return np.vstack(list(resample_chunks(n_queries, samples, seed, max(samples, 1))))


def _chunk_rows(n_pairs: int, samples: int) -> int:
    return max(1, min(samples, CHUNK_ELEMENTS // max(n_pairs, 1)))


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
        return np.where(total > 0, wins / np.where(total > 0, total, 1), np.nan)


def _interval(metric: str, delta: float | None, draws: np.ndarray, confidence: float) -> Interval:
    draws = draws[~np.isnan(draws)]
    if delta is None or draws.size == 0:
        return Interval(metric, delta, None, None, confidence, int(draws.size))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(metric, float(delta), float(low), float(high), confidence, int(draws.size))


def paired_bootstrap(
    labels: Sequence[float],
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    queries: Sequence[str],
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, Interval]:
    """Intervals for the change in ROC-AUC and NDCG@10 from model A to model B on the same pairs."""
    positive = np.asarray(labels, dtype=float) > 0.5
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    names, query_index = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
    ones = np.ones((1, len(positive)))
    auc_delta = float((weighted_auc(b, positive, ones) - weighted_auc(a, positive, ones))[0])
    ndcg_a = per_query_ndcg(labels, scores_a, query_index, len(names))
    ndcg_b = per_query_ndcg(labels, scores_b, query_index, len(names))
    ranked = ~np.isnan(ndcg_a)  # the same queries are rankable for both (it depends on labels only)
    diff = np.where(ranked, ndcg_b - ndcg_a, 0.0)
    ndcg_delta = float(diff[ranked].mean()) if ranked.any() else None
    auc_parts: list[np.ndarray] = []
    ndcg_parts: list[np.ndarray] = []
    for counts in resample_chunks(len(names), samples, seed, _chunk_rows(len(positive), samples)):
        weights = counts[:, query_index]
        auc_parts.append(weighted_auc(b, positive, weights) - weighted_auc(a, positive, weights))
        drawn = (counts * ranked).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndcg_parts.append(np.where(drawn > 0, (counts * diff).sum(axis=1) / np.where(drawn > 0, drawn, 1), np.nan))
    auc_draws = np.concatenate(auc_parts) if auc_parts else np.zeros(0)
    ndcg_draws = np.concatenate(ndcg_parts) if ndcg_parts else np.zeros(0)
    if ndcg_delta is None:
        ndcg_draws = np.full(samples, np.nan)
    return {
        "roc_auc": _interval("roc_auc", None if np.isnan(auc_delta) else auc_delta, auc_draws, confidence),
        "ndcg@10": _interval("ndcg@10", ndcg_delta, ndcg_draws, confidence),
    }
