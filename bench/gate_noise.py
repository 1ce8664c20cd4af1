"""How often does the gate promote a candidate that is no better? And one that is clearly better?

Simulates held-out sets shaped like EduRanker's (queries with a few judged results each, about half
liked), with a champion and a candidate that share most of their errors (two fine-tunes of one base on
overlapping data). Under the null the candidate has the champion's skill; under the alternative it is
better by about +0.10 ROC-AUC. Prints, per held-out size, the promotion rate with a 95% Wilson interval,
for the gate's bootstrap rule and for the old rule (point gain ≥ MIN_IMPROVEMENT).

    .venv/bin/python bench/gate_noise.py [--trials 400]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eduranker.pipeline.gate import GateRule, PairedScores, decide_promotion  # noqa: E402
from eduranker.settings import Settings  # noqa: E402


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def held_out(rng: np.random.Generator, queries: int, per_query: int, gain: float) -> PairedScores:
    n = queries * per_query
    labels = (rng.random(n) < 0.5).astype(float)
    query_of = np.repeat(np.arange(queries), per_query)
    query_effect = rng.normal(scale=0.7, size=queries)[query_of]  # some queries are hard for both models
    shared = rng.normal(size=n)  # errors both models make
    skill = 1.2  # ≈ ROC-AUC 0.75 for the champion
    champion = skill * labels + query_effect + 0.8 * shared + 0.6 * rng.normal(size=n)
    candidate = (skill + gain) * labels + query_effect + 0.8 * shared + 0.6 * rng.normal(size=n)
    return PairedScores(labels.tolist(), champion.tolist(), candidate.tolist(), [f"q{q}" for q in query_of])


def point_gain(c: PairedScores) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(c.labels, c.candidate) - roc_auc_score(c.labels, c.champion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    args = parser.parse_args()
    defaults = Settings()
    rule = replace(defaults.config(GateRule), min_pairs=4, min_queries=2, seed=0)
    print(f"gate: {rule.confidence:.0%} interval, {rule.samples} resamples, lower bound > +{rule.min_improvement}; "
          f"{args.trials} trials per row")  # fmt: skip
    print(f"{'queries':>8}{'pairs':>7}  {'null: gate promotes':>26}  {'null: old rule':>22}  {'+0.10 AUC: gate':>22}")
    rng = np.random.default_rng(0)
    for queries, per_query in ((4, 5), (6, 5), (8, 5), (10, 5), (12, 5), (20, 5), (40, 5)):
        counts = {"null": 0, "old": 0, "better": 0}
        for trial in range(args.trials):
            rule_t = GateRule(**{**rule.__dict__, "seed": trial})
            null = held_out(rng, queries, per_query, gain=0.0)
            counts["null"] += decide_promotion(null, rule_t).promote
            counts["old"] += point_gain(null) >= rule.min_improvement
            counts["better"] += decide_promotion(held_out(rng, queries, per_query, gain=0.6), rule_t).promote
        cells = []
        for key in ("null", "old", "better"):
            low, high = wilson(counts[key], args.trials)
            cells.append(f"{counts[key] / args.trials:6.1%} [{low:5.1%}, {high:5.1%}]")
        print(f"{queries:>8}{queries * per_query:>7}  {cells[0]:>26}  {cells[1]:>22}  {cells[2]:>22}")


if __name__ == "__main__":
    main()
