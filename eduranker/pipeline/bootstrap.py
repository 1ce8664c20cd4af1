"""Paired bootstrap over queries: how sure are we that model B ranks better than model A?

Pairs of one query are not independent (one user, one intent), so queries are what is resampled: each
resample draws the held-out queries with replacement and scores both models on the same draw. The
spread of the difference over the draws gives a percentile confidence interval (the method of TFMA's
bootstrap intervals; DeLong's test would treat every pair as independent, too narrow here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from eduranker.pipeline.evaluation import METRICS, Scored
from eduranker.records import IntervalDoc, JudgedIntervalDoc


@dataclass(frozen=True)
class Interval:
    """The change B − A of one metric: its value on the held-out set and its bootstrap interval."""

    metric: str
    delta: float | None
    low: float | None
    high: float | None
    confidence: float
    samples: int  # resamples where the metric was defined on both models

    def as_dict(self) -> IntervalDoc:
        return IntervalDoc(
            metric=self.metric,
            delta=self.delta,
            low=self.low,
            high=self.high,
            confidence=self.confidence,
            samples=self.samples,
        )

    def on(self, pairs: int, queries: int) -> JudgedIntervalDoc:
        """The interval as stored for a part of the pairs (a slice, the frozen pairs), with its size."""
        return JudgedIntervalDoc(pairs=pairs, queries=queries, **self.as_dict())

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


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


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
    """Intervals for the change from model A to model B on the same pairs of each metric the registry
    resamples (ROC-AUC and NDCG@10), all from the same draws of queries."""
    a = Scored.of(labels, scores_a, queries)
    b = a.rescored(scores_b)
    changes = {metric.name: metric.change for metric in METRICS.bootstrapped if metric.change is not None}
    ones = np.ones((1, a.n_queries))
    deltas = {name: _defined(change(a, b, ones)[0]) for name, change in changes.items()}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in changes}
    for counts in resample_chunks(a.n_queries, samples, seed, _chunk_rows(len(a.labels), samples)):
        for name, change in changes.items():
            parts[name].append(change(a, b, counts))
    return {
        name: _interval(name, deltas[name], np.concatenate(drawn) if drawn else np.zeros(0), confidence)
        for name, drawn in parts.items()
    }
