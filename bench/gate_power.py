"""Why does the gate miss real gains? Its power on a closed-loop run's own held-out pairs, and the
false-promotion rate of the alternatives under repeated looks.

    .venv/bin/python bench/gate_power.py offline /tmp/closed-loop-XXXX/models [--max-length 64]
    .venv/bin/python bench/gate_power.py simulate [--trials 400] [--looks 5]

`offline` reads each version a `bench/closed_loop.py` run wrote (its held-out pairs, `heldout_pairs.jsonl`,
and the champion it was judged against), scores both models on those pairs, and prints: how many
held-out queries and pairs per query the gate had, how many queries hold both a like and a dislike,
how much of the pooled ROC-AUC comes from pairs within one query (the ranking signal) against pairs
across queries (calibration), who orders the within-query pairs right, and the interval of each
candidate statistic: the gate's (pooled ROC-AUC, bootstrap over queries), the same on half the queries
(how its width scales with the number of held-out queries, i.e. with TEST_FRACTION), and a paired
per-query statistic (each query's own ROC-AUC, averaged over the queries that have both classes).

`simulate` draws held-out sets shaped like the closed loop's (10 candidates a query, one relevant, the
champion's top results judged by position-biased users, pairs deduplicated per query and document), a
held-out set that grows over `--looks` jobs (the stable split: each job judges all held-out queries so
far), and a candidate that is no better (null) or truly better, for each rule. It prints the
promotion rate per look and the share of runs with at least one false promotion over all looks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eduranker.pipeline.bootstrap import paired_bootstrap, resample_counts  # noqa: E402


def per_query_auc(labels: np.ndarray, scores: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Each query's own ROC-AUC over its liked × disliked pairs (ties half); NaN without both classes."""
    out = np.full(n, np.nan)
    for q in range(n):
        at = index == q
        pos, neg = scores[at][labels[at] > 0.5], scores[at][labels[at] <= 0.5]
        if pos.size and neg.size:
            diff = pos[:, None] - neg[None, :]
            out[q] = ((diff > 0) + 0.5 * (diff == 0)).mean()
    return out


def per_query_interval(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, index: np.ndarray, n: int, samples: int, seed: int
) -> tuple[float, float, float, int]:
    """Mean per-query ROC-AUC change b − a over queries with both classes; percentile bootstrap over
    all held-out queries (one-class queries are drawn too and weigh nothing). (delta, low, high, k)."""
    d = per_query_auc(labels, b, index, n) - per_query_auc(labels, a, index, n)
    informative = ~np.isnan(d)
    if not informative.any():
        return float("nan"), float("nan"), float("nan"), 0
    diff = np.where(informative, d, 0.0)
    counts = resample_counts(n, samples, seed)
    drawn = (counts * informative).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = np.where(drawn > 0, (counts * diff).sum(axis=1) / np.maximum(drawn, 1), np.nan)
    draws = draws[~np.isnan(draws)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(diff[informative].mean()), float(low), float(high), int(informative.sum())


def within_across(labels: np.ndarray, s: np.ndarray, index: np.ndarray) -> tuple[float, float, int, int]:
    """ROC-AUC restricted to (like, dislike) pairs of one query, and to pairs of two queries; their counts."""
    pos, neg = labels > 0.5, labels <= 0.5
    diff = s[pos][:, None] - s[neg][None, :]
    win = (diff > 0) + 0.5 * (diff == 0)
    same = index[pos][:, None] == index[neg][None, :]
    w = float(win[same].mean()) if same.any() else float("nan")
    return w, float(win[~same].mean()), int(same.sum()), int((~same).sum())


def offline(models: Path, max_length: int, samples: int) -> None:
    import torch

    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.scoring import score_pairs

    torch.set_num_threads(1)
    device = torch.device("cpu")
    cache: dict[str, tuple] = {}

    def scores(source: str, queries: list[str], documents: list[str]) -> np.ndarray:
        if source not in cache:
            cache[source] = load_cross_encoder(source, device, 0)
        model, tokenizer = cache[source]
        out = score_pairs(model, tokenizer, queries, documents, device=device, max_length=max_length, batch_size=64)
        return np.asarray(out, dtype=float)

    for folder in sorted((models / "versions").iterdir()):
        meta = json.loads((folder / "training_metadata.json").read_text())
        against = meta.get("compared_against")
        if not against or str(against).startswith("base model"):
            source = meta["base_model"]
        else:
            source = str(models / "versions" / against)
        rows = [json.loads(line) for line in (folder / "heldout_pairs.jsonl").read_text().splitlines() if line]
        queries = [r["query"] for r in rows]
        documents = [r["document"] for r in rows]
        labels = np.array([float(r["label"]) for r in rows])
        a, b = scores(source, queries, documents), scores(str(folder), queries, documents)
        names, index = np.unique(np.array(queries, dtype=object).astype(str), return_inverse=True)
        n = len(names)
        gate = paired_bootstrap(labels, a, b, queries, samples=samples, confidence=0.95, seed=0)["roc_auc"]
        per_q = np.bincount(index, minlength=n)
        both = per_query_auc(labels, a, index, n)
        wa, xa, wn, xn = within_across(labels, a, index)
        wb, xb, _, _ = within_across(labels, b, index)
        pq = per_query_interval(labels, a, b, index, n, samples, 0)
        # Width against the number of queries: the gate's interval on random halves of the queries.
        rng = np.random.default_rng(0)
        widths = []
        for _ in range(10):
            half = rng.permutation(n)[: n // 2]
            keep = np.isin(index, half)
            part = paired_bootstrap(labels[keep], a[keep], b[keep], [queries[i] for i in np.flatnonzero(keep)],
                                    samples=samples, confidence=0.95, seed=0)["roc_auc"]  # fmt: skip
            if part.low is not None:
                widths.append(part.high - part.low)
        # Jackknife over queries: each query's influence on the pooled ROC-AUC change.
        influence = []
        for q in range(n):
            keep = index != q
            part = paired_bootstrap(labels[keep], a[keep], b[keep], [queries[i] for i in np.flatnonzero(keep)],
                                    samples=100, confidence=0.95, seed=0)["roc_auc"]  # fmt: skip
            influence.append(part.delta)
        influence_arr = np.array(influence, dtype=float)
        jack_se = float(np.sqrt((n - 1) / n * ((influence_arr - influence_arr.mean()) ** 2).sum()))
        print(
            f"{folder.name} (against {against}): {len(rows)} pairs / {n} queries ({per_q.mean():.2f} pairs a "
            f"query, {int((~np.isnan(both)).sum())} queries with both classes, {int(labels.sum())} likes); "
            f"{meta.get('promoted') and 'promoted' or 'rejected'}"
        )
        width = gate.high - gate.low
        print(
            f"    pooled ROC-AUC {gate.delta:+.3f} [{gate.low:+.3f}, {gate.high:+.3f}] (width {width:.3f}; "
            f"jackknife SE {jack_se:.3f}); on half the queries width {np.mean(widths):.3f} "
            f"(×{np.mean(widths) / width:.2f})"
        )
        print(
            f"    within-query pairs {wn} ({wn / (wn + xn):.1%} of the pooled AUC's pairs): champion orders "
            f"{wa:.1%} right, candidate {wb:.1%}; across-query pairs {xn}: champion {xa:.3f}, candidate {xb:.3f}"
        )
        print(f"    per-query ROC-AUC change {pq[0]:+.3f} [{pq[1]:+.3f}, {pq[2]:+.3f}] over {pq[3]} queries")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    off = sub.add_parser("offline")
    off.add_argument("models", type=Path)
    off.add_argument("--max-length", type=int, default=64)
    off.add_argument("--samples", type=int, default=1000)
    sim = sub.add_parser("simulate")
    sim.add_argument("--trials", type=int, default=400)
    sim.add_argument("--looks", type=int, default=5)
    sim.add_argument("--designs", default="", help="comma-separated design numbers (0-4); default: all")
    sim.add_argument("--arms", default="null,better")
    sim.add_argument("--margins", default="0.005", help="comma-separated MIN_IMPROVEMENT values to compare")
    args = parser.parse_args()
    if args.mode == "offline":
        offline(args.models, args.max_length, args.samples)
    else:
        import gate_power_sim

        only = [d for d in args.designs.split(",") if d]
        margins = tuple(float(m) for m in args.margins.split(","))
        gate_power_sim.run(args.trials, args.looks, only, tuple(args.arms.split(",")), margins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
