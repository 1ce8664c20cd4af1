"""Does a counterfactual screen (logged exploration + an inverse-propensity estimate) pay for itself?

    .venv/bin/python bench/screen_value.py [--runs 1000] [--seed 0] [--logged 2500] [--deltas ...]

The world and the users are bench/challenge_decisions.py's: 3,000 queries of 10 candidates, one
relevant; a model's score is skill × relevant + a query effect + an error all models share + its own
error (bench/gate_power_sim.py); the champion has the closed loop's skill (true NDCG@10 ≈ 0.90); per row
8 challengers, each with its own error and a skill calibrated so that its true NDCG@10 differs from the
champion's by the row's Δ. Users are of four types (like propensity and examination depth from the
quantiles of Beta(8, 2) and of eta in [0.7, 1.5]): rank r is examined with probability (1/r)^eta, an
examined relevant result is liked with the type's propensity, an examined other one disliked half the
time, 2% of reactions flipped. NDCG@10 with one relevant result is 1/log2(1 + its rank).

One run of a row draws one of the row's challengers and plays both places where a sharper screen could
pay, on the same challenger:

1. **The screen**, on the evidence a round of the closed loop gives it: the 55 held-out queries of its
   first look, each searched 1 to 3 times by users of random types (about 110 of the round's 250
   searches), served the champion's ranking.
   - the current screen: the held-out pairs (the latest label per query and document: like 1, dislike
     0) judged by `eduranker.pipeline.gate.decide_promotion` at the settings' defaults; rejected unless
     `screened` (refused, or the ROC-AUC interval wholly below zero). The champion's frozen reference
     pairs and the slices are left out (one set of pairs, no slices: they only add rejections).
   - the counterfactual screen: a share ε of all searches is served with one random adjacent pair
     swapped (rank k and k + 1, k uniform in 1..9: RandPair's pair swap, the cheapest randomisation
     that reaches every rank), the swap logged with the result; the held-out searches too. Per-rank
     examination is estimated from the explored searches against the others (reactions, likes and
     dislikes, on the same documents one rank lower and one rank higher: p(k+1)/p(k) =
     sqrt(A·D / (B·C)), where the documents' own appeal cancels; chained; each ratio clipped to
     [0.2, 1]), from the `--logged` searches served so far (the propensity does not depend on the
     candidate, so it accumulates from round to round; default 2,500, ten rounds). The candidate's
     gain is the clipped inverse-propensity estimate of its NDCG@10 change on the held-out searches:
     per like of document d shown at rank j, (λ(rank of d by the candidate) − λ(rank of d by the
     champion)) / max(p̂(j), 0.05), λ the NDCG@10 discount (Joachims, Swaminathan and Schnabel, WSDM
     2017). Every rank is examined with some probability, so the champion's own searches count too,
     and the estimate is unbiased up to the propensity's error and the clipping; exploration is what
     measures the propensity. The interval is a percentile bootstrap over queries, the gate's own
     resamples (1,000), each with the propensity re-estimated on Poisson-resampled counts, so that it
     carries the propensity's error as well; rejected when it lies wholly below zero, at the gate's
     95% and at a stricter 99%. A self-normalised estimate divides each resample by the sum of its
     (positive) weights, so it rejects on exactly the same resamples. The estimate counts likes only.
   - the same estimate with the true examination probabilities and no exploration at all: the most
     any amount of logged exploration could buy this estimator.
2. **The challenge**, for a candidate that passes: `challenge_decisions.interleaving_run` (team draft,
   the producer's always-valid test, 5 searches a minute, 30% anonymous, at most 30,000 searches); the
   users' cost of the challenge is the mean true NDCG@10 lost by the interleaved lists against the
   champion's own list, times the searches served until the decision (negative: a gain).

The exploration's own cost is the true NDCG@10 the swaps lose, on ε of the round's 250 searches (at
least that: exploration that ran during challenges too would cost more). It pays only if the users'
cost it saves per candidate (worse challengers kept from users, better ones no longer kept from
them; the rows taken as equally likely) outweighs that, with no rise in better candidates blocked. A
better candidate blocked also forgoes its gain for as long as it would have been champion: not
counted, so the figures favour the counterfactual screen.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from challenge_decisions import (  # noqa: E402
    CHALLENGERS,
    POOL,
    QUERIES,
    SERVED,
    USER_TYPES,
    Pools,
    calibrate,
    interleaving_run,
    team_draft,
    user_type,
)
from gate_noise import wilson  # noqa: E402
from gate_power_sim import CANDIDATES, OWN_SD, SKILL, model_scores, true_ndcg, world  # noqa: E402

from eduranker.pipeline.bootstrap import resample_counts  # noqa: E402
from eduranker.pipeline.gate import GateRule, PairedScores, decide_promotion  # noqa: E402
from eduranker.settings import Settings  # noqa: E402

HELDOUT = 55  # held-out queries at the closed loop's first look (gate_power_sim.LOOKS_02)
ROUND = 250  # searches a round of the closed loop serves
EPSILONS = (0.05, 0.10)
DELTAS = (-0.05, -0.03, 0.0, 0.03, 0.05)
CLIP = 0.05  # examination probability floor: weights at most 20
RATIO = (0.2, 1.0)  # p(k+1)/p(k) clipped: examination does not rise with rank
SAMPLES = 1000
ANONYMOUS, RATE = 0.3, 5  # challenge_decisions' defaults
DISCOUNT = 1.0 / np.log2(np.arange(2, CANDIDATES + 2))  # λ(rank), rank 1..10
TYPES = [user_type(t) for t in range(USER_TYPES)]
LIKE = np.array([t[0] for t in TYPES])
ETA = np.array([t[1] for t in TYPES])
RANKS = np.arange(1, CANDIDATES + 1)
LEVELS = (0.95, 0.99)  # the gate's confidence, and a stricter one
IPS = ("true p, ε 0",) + tuple(f"ε {e:.2f}" for e in EPSILONS)
SCREENS = ("current",) + tuple(f"ips {name} {level:.0%}" for name in IPS for level in LEVELS)


def true_propensity() -> np.ndarray:
    """Per rank, relative to rank 1: the probability of a like on a relevant result (users of the four
    types in equal shares: the like propensity and the examination depth go together)."""
    like = (LIKE[:, None] * RANKS[None, :] ** -ETA[:, None]).mean(axis=0)
    return like / like[0]


def rank_of(scores: np.ndarray) -> np.ndarray:
    """rank (0-based) of each document of each query under these scores."""
    order = np.argsort(-scores, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(CANDIDATES)[None, :].repeat(len(order), 0), axis=1)
    return ranks


def react(rng: np.random.Generator, relevant: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """challenge_decisions.react for a batch of shown lists (rows): +1 like, −1 dislike, 0 nothing."""
    n = len(relevant)
    examined = rng.random((n, CANDIDATES)) < RANKS[None, :] ** -ETA[kinds][:, None]
    liked = examined & relevant & (rng.random((n, CANDIDATES)) < LIKE[kinds][:, None])
    disliked = examined & ~relevant & (rng.random((n, CANDIDATES)) < 0.5)
    out = liked.astype(int) - disliked.astype(int)
    flip = (out != 0) & (rng.random((n, CANDIDATES)) < 0.02)
    return np.where(flip, -out, out)


@dataclass
class Log:
    """Searches served: query, shown order (documents), swap position (−1: the champion's order), reactions."""

    query: np.ndarray
    shown: np.ndarray
    swap: np.ndarray
    reaction: np.ndarray


def serve(rng: np.random.Generator, relevant: np.ndarray, order: np.ndarray, queries: np.ndarray, eps: float) -> Log:
    shown = order[queries].copy()
    swap = np.where(rng.random(len(queries)) < eps, rng.integers(0, CANDIDATES - 1, size=len(queries)), -1)
    rows = np.flatnonzero(swap >= 0)
    k = swap[rows]
    shown[rows, k], shown[rows, k + 1] = shown[rows, k + 1], shown[rows, k].copy()
    kinds = rng.integers(USER_TYPES, size=len(queries))
    rel = np.take_along_axis(relevant[queries], shown, axis=1)
    return Log(queries, shown, swap, react(rng, rel, kinds))


def swap_counts(log: Log) -> tuple[np.ndarray, np.ndarray]:
    """Per adjacent pair (k, k + 1): reactions A (the document of rank k shown at k + 1) and B (the one of
    rank k + 1 shown at k) in the searches that swapped it, C and D (at k and k + 1) in the searches that
    did not, as rows of one array; and the scale n(swapped k) / n(not swapped) per pair."""
    reacted = log.reaction != 0
    control = reacted[log.swap < 0]
    found = np.zeros((4, CANDIDATES - 1))
    scale = np.zeros(CANDIDATES - 1)
    for k in range(CANDIDATES - 1):
        swapped = reacted[log.swap == k]
        found[:, k] = swapped[:, k + 1].sum(), swapped[:, k].sum(), control[:, k].sum(), control[:, k + 1].sum()
        scale[k] = len(swapped) / max(len(control), 1)
    return found, scale


def propensity(found: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Examination per rank relative to rank 1 (rows: one per set of counts): p(k+1)/p(k) = sqrt(A·D / (B·C))
    (the documents' own appeal cancels), 0.5 added to each count, clipped to RATIO, chained."""
    a, b, c, d = (found[..., i, :] for i in range(4))
    ratio = np.sqrt((a + 0.5) * (d * scale + 0.5) / ((b + 0.5) * (c * scale + 0.5)))
    ratio = np.where(scale > 0, np.clip(ratio, *RATIO), 1.0)
    ones = np.ones(ratio.shape[:-1] + (1,))
    return np.concatenate([ones, np.cumprod(ratio, axis=-1)], axis=-1)


def propensity_draws(rng: np.random.Generator, log: Log, samples: int) -> np.ndarray:
    """`samples` × ranks: the estimate on Poisson-resampled counts (each count of reacting searches drawn
    as a Poisson bootstrap of its searches), so that the interval carries the propensity's own error."""
    found, scale = swap_counts(log)
    return propensity(rng.poisson(found, size=(samples,) + found.shape).astype(float), scale)


def ips_rejects(log: Log, champion_rank: np.ndarray, candidate_rank: np.ndarray, p: np.ndarray,
                counts: np.ndarray) -> list[bool]:  # fmt: skip
    """The counterfactual screen: the clipped IPS estimate of the change in NDCG@10, per resample of the
    queries (`counts`) and of the propensity (`p`: one row, or one per resample); rejected when the
    interval lies wholly below zero (per confidence level in LEVELS)."""
    docs = log.shown
    gain = DISCOUNT[np.take_along_axis(candidate_rank[log.query], docs, axis=1)]
    gain -= DISCOUNT[np.take_along_axis(champion_rank[log.query], docs, axis=1)]
    _, index = np.unique(log.query, return_inverse=True)
    member = np.zeros((len(index), counts.shape[1]))
    member[np.arange(len(index)), index] = 1.0
    per_query_rank = member.T @ ((log.reaction > 0) * gain)  # queries × shown rank: Σ over likes
    draws = ((counts @ per_query_rank) / np.maximum(p, CLIP)).sum(axis=1)
    return [bool(np.percentile(draws, 100 * (1 + level) / 2) < 0) for level in LEVELS]


def gate_rejects(log: Log, champion: np.ndarray, candidate: np.ndarray, rule: GateRule) -> bool:
    """The current screen: the gate's decision on the held-out pairs (latest label per query and document)."""
    pairs: dict[tuple[int, int], float] = {}
    for q, shown, reaction in zip(log.query, log.shown, log.reaction, strict=True):
        for doc, r in zip(shown, reaction, strict=True):
            if r:
                pairs[(int(q), int(doc))] = float(r > 0)
    kept = sorted(pairs.items())
    decision = decide_promotion(
        PairedScores(
            [label for _, label in kept],
            [float(champion[q, d]) for (q, d), _ in kept],
            [float(candidate[q, d]) for (q, d), _ in kept],
            [f"q{q}" for (q, _), _ in kept],
        ),
        rule,
    )
    return not decision.screened


def interleaved(
    rng: np.random.Generator, w: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray
) -> tuple[Pools, float]:
    """challenge_decisions.pools for interleaving alone (batched reactions), and the true NDCG@10 the
    interleaved lists lose against the champion's own list (mean per search)."""
    order_a, order_b = np.argsort(-a, axis=1), np.argsort(-b, axis=1)
    credit, reacted, loss = [], [], []
    for t in range(USER_TYPES):
        queries = rng.integers(QUERIES, size=POOL)
        drafts = [team_draft(order_a[q], order_b[q], rng.random(CANDIDATES)) for q in queries]
        shown = np.array([order for order, _ in drafts])
        teams = np.array([team for _, team in drafts])
        rel = np.take_along_axis(w["relevant"][queries], shown, axis=1)
        r = react(rng, rel, np.full(POOL, t))
        net_b, net_a = (r * (teams == 1)).sum(axis=1), (r * (teams == 0)).sum(axis=1)
        any_reaction = (r != 0).any(axis=1)
        credit.append(np.sign(net_b - net_a)[any_reaction].astype(float))
        reacted.append(float(any_reaction.mean()))
        champion_rel = w["relevant"][queries][np.arange(POOL)[:, None], order_a[queries]]
        loss.append((DISCOUNT * champion_rel).sum(axis=1) - (DISCOUNT * rel).sum(axis=1))
    return Pools(credit, reacted, []), float(np.mean(loss))


def swap_cost(w: dict[str, np.ndarray], order: np.ndarray) -> float:
    """True NDCG@10 lost by one explored search (one adjacent pair swapped, k uniform), on average."""
    rank = np.argmax(np.take_along_axis(w["relevant"], order, axis=1), axis=1)  # the relevant one's rank
    lost = []
    for k in range(CANDIDATES - 1):
        moved = np.where(rank == k, k + 1, np.where(rank == k + 1, k, rank))
        lost.append(DISCOUNT[rank] - DISCOUNT[moved])
    return float(np.mean(lost))


@dataclass
class Row:
    delta: float
    rejected: dict[str, list[bool]]
    searches: list[int]
    signs: list[int]
    cost: list[float]  # users' cost of each run's challenge (NDCG@10 × searches), had it been challenged
    loss: float  # per interleaved search


def run_row(args: argparse.Namespace, rng: np.random.Generator, w: dict[str, np.ndarray], champion: np.ndarray,
            base: float, delta: float, rule: GateRule) -> Row:  # fmt: skip
    skill = calibrate(rng, w, base, delta)
    challengers = [
        model_scores(w, skill, rng.normal(scale=OWN_SD, size=w["relevant"].shape)) for _ in range(CHALLENGERS)
    ]
    truth = float(np.mean([true_ndcg(w, c) for c in challengers]) - base)
    built = [interleaved(rng, w, champion, c) for c in challengers]
    order = np.argsort(-champion, axis=1)
    champion_rank = rank_of(champion)
    ranks = [rank_of(c) for c in challengers]
    like_p = true_propensity()
    row = Row(truth, {s: [] for s in SCREENS}, [], [], [], float(np.mean([loss for _, loss in built])))
    for i in range(args.runs):
        c = int(rng.integers(CHALLENGERS))
        heldout = rng.choice(QUERIES, size=HELDOUT, replace=False)
        queries = np.repeat(heldout, rng.integers(1, 4, size=HELDOUT))
        counts = resample_counts(HELDOUT, SAMPLES, seed=i)
        plain = serve(rng, w["relevant"], order, queries, 0.0)
        run_rule = GateRule(**{**rule.__dict__, "seed": i})
        row.rejected["current"].append(gate_rejects(plain, champion, challengers[c], run_rule))
        found = {IPS[0]: ips_rejects(plain, champion_rank, ranks[c], like_p[None, :], counts)}
        for eps, name in zip(EPSILONS, IPS[1:], strict=True):
            explored = serve(rng, w["relevant"], order, rng.integers(QUERIES, size=args.logged), eps)
            p = propensity_draws(rng, explored, SAMPLES)
            log = serve(rng, w["relevant"], order, queries, eps)
            found[name] = ips_rejects(log, champion_rank, ranks[c], p, counts)
        for name, verdicts in found.items():
            for level, rejected in zip(LEVELS, verdicts, strict=True):
                row.rejected[f"ips {name} {level:.0%}"].append(rejected)
        searches, sign = interleaving_run(rng, built[c][0], ANONYMOUS, RATE)
        row.searches.append(searches)
        row.signs.append(sign)
        row.cost.append(built[c][1] * searches)
    return row


def rate(flags: list[bool]) -> str:
    low, high = wilson(sum(flags), len(flags))
    return f"{np.mean(flags):.1%} [{low:.1%}, {high:.1%}]"


def after(row: Row, screen: str) -> float:
    """The users' cost per candidate screened: its challenge's cost where the screen lets it through."""
    return float(np.mean(np.array(row.cost) * ~np.array(row.rejected[screen])))


def exploration(screen: str, explore: dict[float, float]) -> float:
    return next((cost for eps, cost in explore.items() if f"ε {eps:.2f}" in screen), 0.0)


def report(rows: list[Row], explore: dict[float, float], per_search: float) -> None:
    print("\nblocked by the screen (95% Wilson)")
    print(f"{'Δ NDCG@10':>10} | " + " | ".join(f"{s:<22}" for s in SCREENS))
    for row in rows:
        print(f"{row.delta:+10.3f} | " + " | ".join(f"{rate(row.rejected[s]):<22}" for s in SCREENS))
    print("\nthe challenge of a candidate that passes (interleaving; cost = NDCG@10 lost × searches, negative: gained)")
    print(f"{'Δ NDCG@10':>10} | rejected | promoted | searches to decide (median, mean) | loss a search | cost")
    for row in rows:
        signs = np.array(row.signs)
        print(f"{row.delta:+10.3f} | {np.mean(signs < 0):8.1%} | {np.mean(signs > 0):8.1%} | "
              f"{np.median(row.searches):>16,.0f} {np.mean(row.searches):>16,.0f} | {row.loss:+13.4f} | "
              f"{np.mean(row.cost):+16.1f}")  # fmt: skip
    print("\nusers' cost per candidate screened (the challenge's cost where the screen lets it through)")
    print(f"{'Δ NDCG@10':>10} | " + " | ".join(f"{s:<22}" for s in SCREENS))
    for row in rows:
        print(f"{row.delta:+10.3f} | " + " | ".join(f"{after(row, s):<+22.1f}" for s in SCREENS))
    print(f"\nexploration (one adjacent swap): {per_search:.4f} true NDCG@10 lost per explored search; a round of "
          f"{ROUND} searches: " + ", ".join(f"ε {eps:.2f} {cost:.2f}" for eps, cost in explore.items()))  # fmt: skip
    print("  saved = users' cost per candidate after the current screen − after this one (per row; and per")
    print("  candidate with the rows equally likely); it pays if that beats the exploration's cost a round and")
    print("  no better candidate (Δ > 0) is blocked more often than by the current screen")
    for screen in SCREENS[1:]:
        saved = {row.delta: after(row, "current") - after(row, screen) for row in rows}
        blocked = {row.delta: (np.mean(row.rejected["current"]), np.mean(row.rejected[screen])) for row in rows}
        rise = [d for d, (old, new) in blocked.items() if d > 0.01 and new > old]
        cost = exploration(screen, explore)
        mean = float(np.mean(list(saved.values())))
        verdict = "pays" if mean > cost and not rise else "does not pay"
        print(f"  {screen:<20} saved " + ", ".join(f"{d:+.3f}: {v:+.1f}" for d, v in saved.items())
              + f"; per candidate {mean:+.1f} against exploration {cost:.2f} a round; better ones blocked "
              + ", ".join(f"{d:+.3f}: {blocked[d][0]:.1%} → {blocked[d][1]:.1%}" for d in blocked if d > 0.01)
              + f": {verdict}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logged", type=int, default=2500, help="searches served so far (propensity estimate)")
    parser.add_argument("--deltas", default=",".join(str(d) for d in DELTAS))
    args = parser.parse_args()
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)
    w = world(rng, QUERIES)
    champion = model_scores(w, SKILL, w["champion_own"])
    base = true_ndcg(w, champion)
    rule = Settings().config(GateRule)
    per_search = swap_cost(w, np.argsort(-champion, axis=1))
    explore = {eps: eps * ROUND * per_search for eps in EPSILONS}
    print(f"champion true NDCG@10 {base:.3f}; {args.runs} runs a row; screen on {HELDOUT} held-out queries (1-3 "
          f"searches each); propensities from {args.logged:,} searches served; challenge: {RATE} searches a minute, "
          f"{ANONYMOUS:.0%} anonymous, at most {SERVED:,} searches", flush=True)  # fmt: skip
    rows = []
    for delta in (float(d) for d in args.deltas.split(",")):
        begun = time.monotonic()
        rows.append(run_row(args, rng, w, champion, base, delta, rule))
        print(f"  row {delta:+.2f} (true {rows[-1].delta:+.3f}): {time.monotonic() - begun:.0f} s", flush=True)
    report(rows, explore, per_search)
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
