"""How often a challenge decides wrongly, and how soon it decides rightly: interleaving beside a 50/50
A/B test and the offline gate, on the same simulated searches and users.

    .venv/bin/python bench/challenge_decisions.py [--runs 1000] [--rate 5] [--anonymous 0.3] [--seed 0]
                                                  [--gate-trials 400]

The world is bench/gate_power_sim.py's (10 candidates a query, one relevant; a model's score is skill ×
relevant + a query effect + an error all models share + its own error). The champion has the closed
loop's skill (true NDCG@10 ≈ 0.90); each challenger has its own error drawn afresh and a skill
calibrated so that its true NDCG@10 differs from the champion's by the row's Δ (−0.03, 0, +0.03, +0.05).

Users: each has a like propensity (a relevant result examined is liked with probability Beta(8, 2)) and
an examination depth (rank r is examined with probability (1/r)^eta, eta uniform in [0.7, 1.5]); an
examined non-relevant result is disliked half the time; 2% of reactions are flipped. A user makes 1 to
12 searches; `--anonymous` of the searches carry no user (clustered by the hour they were made in, as
`producer.online_refresh.cluster_key` does). Searches arrive at `--rate` a minute and the producer looks every
minute, for at most 30,000 searches (interleaving also stops at CHALLENGE_MAX_IMPRESSIONS, 20,000
interleaved searches with feedback). Figures count searches served (impressions), with or without
feedback.

- interleaving (the default): every search is a team draft of both rankings; each search with feedback
  is credited to the version whose documents drew more likes than dislikes; the decision is
  `producer.challenge.decide`'s (the always-valid interval of the mean credit, users as clusters,
  CHALLENGE_MIN_FEEDBACK 100 and 100 clusters first, CHALLENGE_CONFIDENCE 0.95).
- A/B 50/50: users (and anonymous searches) split in half, each half served one version alone; the
  like rates of the two halves compared by the same always-valid test (the guard's holdback test,
  clusters per side), promoted when the interval of (challenger − champion) lies above zero.
- the offline gate alone: bench/gate_power_sim.py's held-out pairs chosen by the champion's ranking, the
  gate's bootstrap at its defaults, one look (`--gate-trials` per row: each is a bootstrap).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gate_noise import wilson  # noqa: E402
from gate_power_sim import CANDIDATES, OWN_SD, SKILL, model_scores, trial, true_ndcg, world  # noqa: E402

from producer.guard import HOLDBACK_TAU, INTERLEAVE_TAU, MIN_CLUSTERS  # noqa: E402
from producer.sequential import radius  # noqa: E402

ALPHA = 0.05  # CHALLENGE_CONFIDENCE 0.95
MIN_FEEDBACK = 100  # CHALLENGE_MIN_FEEDBACK
CAP = 20_000  # CHALLENGE_MAX_IMPRESSIONS: interleaved searches with feedback
SERVED = 30_000  # searches served in a run at most (the cap comes first for interleaving)
QUERIES = 3000
CHALLENGERS = 8  # per row: each run is judged against one of these, drawn at random
POOL = 6000  # simulated searches per challenger and user type
USER_TYPES = 4
DELTAS = (-0.03, 0.0, 0.03, 0.05)


def calibrate(rng: np.random.Generator, w: dict[str, np.ndarray], base: float, delta: float) -> float:
    """The skill whose fresh-error models score `base + delta` true NDCG@10 on average (bisection)."""
    if delta == 0:
        return SKILL
    own = [rng.normal(scale=OWN_SD, size=w["relevant"].shape) for _ in range(4)]
    low, high = SKILL - 2.0, SKILL + 3.0
    for _ in range(18):
        mid = (low + high) / 2
        got = np.mean([true_ndcg(w, model_scores(w, mid, e)) for e in own])
        low, high = (mid, high) if got < base + delta else (low, mid)
    return (low + high) / 2


def team_draft(a: np.ndarray, b: np.ndarray, coins: np.ndarray) -> tuple[list[int], list[int]]:
    taken: set[int] = set()
    order, teams, cur, picks = [], [], [0, 0], [0, 0]
    rankings = (a, b)
    for i in range(len(a)):
        team = 0 if picks[0] < picks[1] or (picks[0] == picks[1] and coins[i] < 0.5) else 1
        r = rankings[team]
        while r[cur[team]] in taken:
            cur[team] += 1
        doc = int(r[cur[team]])
        taken.add(doc)
        order.append(doc)
        teams.append(team)
        picks[team] += 1
    return order, teams


def react(rng: np.random.Generator, relevant: np.ndarray, like_p: float, eta: float) -> np.ndarray:
    """+1 like, −1 dislike, 0 nothing, per position of a shown list."""
    ranks = np.arange(1, len(relevant) + 1)
    examined = rng.random(len(relevant)) < (1.0 / ranks) ** eta
    liked = examined & relevant & (rng.random(len(relevant)) < like_p)
    disliked = examined & ~relevant & (rng.random(len(relevant)) < 0.5)
    out = liked.astype(int) - disliked.astype(int)
    flip = (out != 0) & (rng.random(len(relevant)) < 0.02)
    return np.where(flip, -out, out)


@dataclass
class Pools:
    """Per user type: interleaved searches (feedback?, credit) and one-version searches (likes, feedbacks)."""

    credit: list[np.ndarray]  # per type: credit of each search with feedback (−1, 0, 1)
    reacted: list[float]  # per type: the share of interleaved searches with any feedback
    ab: list[tuple[np.ndarray, np.ndarray]]  # per type, per arm (champion, challenger): (likes, feedbacks)


def user_type(t: int) -> tuple[float, float]:
    """(like propensity, eta) of user type t (quantiles of Beta(8, 2) and of U[0.7, 1.5])."""
    q = (t + 0.5) / USER_TYPES
    like = float(np.quantile(np.random.default_rng(99).beta(8, 2, 20000), q))
    return like, 0.7 + 0.8 * q


def pools(rng: np.random.Generator, w: dict[str, np.ndarray], champion: np.ndarray, challenger: np.ndarray) -> Pools:
    order_a, order_b = np.argsort(-champion, axis=1), np.argsort(-challenger, axis=1)
    credit, ab, reacted = [], [], []
    for t in range(USER_TYPES):
        like_p, eta = user_type(t)
        found = []
        arms: list[list[tuple[int, int]]] = [[], []]
        for _ in range(POOL):
            q = int(rng.integers(QUERIES))
            order, teams = team_draft(order_a[q], order_b[q], rng.random(CANDIDATES))
            r = react(rng, w["relevant"][q, order], like_p, eta)
            if np.any(r != 0):
                teams_arr = np.asarray(teams)
                net_a, net_b = int(r[teams_arr == 0].sum()), int(r[teams_arr == 1].sum())
                found.append((net_b > net_a) - (net_b < net_a))
            for arm, ranking in enumerate((order_a[q], order_b[q])):
                alone = react(rng, w["relevant"][q, ranking], like_p, eta)
                arms[arm].append((int((alone > 0).sum()), int((alone != 0).sum())))
        credit.append(np.asarray(found, dtype=float))
        reacted.append(len(found) / POOL)
        ab.append(tuple(np.asarray(a, dtype=float) for a in arms))  # type: ignore[misc]
    return Pools(credit, reacted, ab)


def traffic(rng: np.random.Generator, n: int, anonymous: float, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id, user type) of `n` searches in arrival order: users with 1–12 searches each, interleaved
    in time; anonymous searches clustered by their hour (`rate` searches a minute)."""
    sizes = rng.integers(1, 13, size=n)
    owners = np.repeat(np.arange(n), sizes)[: 2 * n]
    rng.shuffle(owners)  # users' searches spread over the stream
    owners = owners[:n]
    kinds = rng.integers(USER_TYPES, size=n)[owners]
    anon = rng.random(n) < anonymous
    hour = (np.arange(n) / (rate * 60)).astype(int)
    clusters = np.where(anon, -1 - hour, owners)  # negative ids: anonymous hours
    return clusters, np.where(anon, rng.integers(USER_TYPES, size=n), kinds)


def running_test(clusters: np.ndarray, num: np.ndarray, den: np.ndarray, looks: np.ndarray):
    """Per look (an index into the stream): the ratio estimate, its cluster-robust variance, the clusters
    seen and the total den. The variance is kept as running sums of num_c², num_c·den_c and den_c² over
    clusters, updated by each search's increment (vectorised: the sums before it within its cluster)."""
    _, idx = np.unique(clusters, return_inverse=True)
    order = np.argsort(idx, kind="stable")
    grouped = idx[order]
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    lengths = np.diff(np.r_[starts, len(num)])
    prior_num, prior_den = np.empty(len(num)), np.empty(len(den))
    for values, prior in ((num, prior_num), (den, prior_den)):
        cum = np.cumsum(values[order])
        before_group = np.repeat(np.r_[0.0, cum[starts[1:] - 1]], lengths)
        prior[order] = cum - values[order] - before_group  # this cluster's sum before this search
    d_nn = 2 * prior_num * num + num * num
    d_nd = prior_num * den + prior_den * num + num * den
    d_dd = 2 * prior_den * den + den * den
    first = np.zeros(len(num))
    first[np.unique(idx, return_index=True)[1]] = 1.0
    n_sum, d_sum, nn, nd, dd, g = (np.cumsum(x)[looks] for x in (num, den, d_nn, d_nd, d_dd, first))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = n_sum / d_sum
        var = g / (g - 1) * (nn - 2 * r * nd + r * r * dd) / d_sum**2
    return r, var, g, d_sum


def radii(var: np.ndarray, tau: float) -> np.ndarray:
    return np.array([radius(v, tau * tau, ALPHA) if np.isfinite(v) and v > 0 else math.inf for v in var])


def first_decision(est: np.ndarray, rad: np.ndarray, ok: np.ndarray) -> tuple[int, int]:
    """(index of the first look that decides, +1 promote / −1 reject), or (−1, 0) if none does."""
    up, down = ok & (est - rad > 0), ok & (est + rad < 0)
    hit = np.flatnonzero(up | down)
    if not len(hit):
        return -1, 0
    return int(hit[0]), 1 if up[hit[0]] else -1


def interleaving_run(rng: np.random.Generator, pool: Pools, anonymous: float, rate: int) -> tuple[int, int]:
    """(searches served when it decided, +1 promoted / −1 rejected / 0 capped or undecided)."""
    clusters, kinds = traffic(rng, SERVED, anonymous, rate)
    credit, den = np.zeros(SERVED), np.zeros(SERVED)
    for k in range(USER_TYPES):
        mask = (kinds == k) & (rng.random(SERVED) < pool.reacted[k])  # searches with feedback count
        credit[mask] = pool.credit[k][rng.integers(len(pool.credit[k]), size=int(mask.sum()))]
        den[mask] = 1.0
    looks = np.arange(rate - 1, SERVED, rate)  # a look a minute
    reacted = den > 0
    upto = np.maximum(np.cumsum(den)[looks].astype(int) - 1, 0)  # the last search with feedback at each look
    est, var, g, d = running_test(clusters[reacted], credit[reacted], den[reacted], upto)
    ok = (d >= MIN_FEEDBACK) & (g >= MIN_CLUSTERS) & (d <= CAP)
    at, sign = first_decision(est, radii(var, INTERLEAVE_TAU), ok)
    return (int(looks[at]) + 1 if at >= 0 else SERVED), sign


def ab_run(rng: np.random.Generator, pool: Pools, anonymous: float, rate: int) -> tuple[int, int]:
    """The same for a 50/50 A/B test: (searches served when it decided, sign)."""
    clusters, kinds = traffic(rng, SERVED, anonymous, rate)
    arm = ((np.abs(clusters) * 2654435761) % 1000 < 500).astype(int)  # a stable half of users and hours
    likes, feedback = np.empty(SERVED), np.empty(SERVED)
    for k in range(USER_TYPES):
        for a in (0, 1):
            mask = (kinds == k) & (arm == a)
            rows = pool.ab[k][a][rng.integers(len(pool.ab[k][a]), size=int(mask.sum()))]
            likes[mask], feedback[mask] = rows[:, 0], rows[:, 1]
    looks = np.arange(rate - 1, SERVED, rate)
    sides = []
    for a in (0, 1):
        mask = arm == a
        upto = np.cumsum(mask) - 1  # the side's last search at each look
        ok_looks = np.maximum(upto[looks], 0)
        sides.append(running_test(clusters[mask], likes[mask], feedback[mask], ok_looks))
    (ra, va, ga, da), (rb, vb, gb, db) = sides
    ok = (np.minimum(da, db) >= MIN_FEEDBACK) & (np.minimum(ga, gb) >= MIN_CLUSTERS)
    at, sign = first_decision(rb - ra, radii(va + vb, HOLDBACK_TAU), ok)
    return (int(looks[at]) + 1 if at >= 0 else SERVED), sign


def summary(results: list[tuple[int, int]]) -> str:
    runs = len(results)
    promoted = sum(1 for _, sign in results if sign > 0)
    rejected = sum(1 for _, sign in results if sign < 0)
    low, high = wilson(promoted, runs)
    promoted_at = sorted(n for n, sign in results if sign > 0)
    # Runs that never promote count as never (beyond the cap) for the quantiles.
    times = sorted([n for n, sign in results if sign > 0] + [math.inf] * (runs - promoted))
    median, p90 = times[runs // 2], times[int(0.9 * runs)]
    shown = lambda x: "never" if math.isinf(x) else f"{x:,.0f}"  # noqa: E731
    return (f"promoted {promoted / runs:6.1%} [{low:.1%}, {high:.1%}]  rejected {rejected / runs:6.1%}  "
            f"searches to promote: median {shown(median)}, p90 {shown(p90)}"
            + (f" (of promoted: median {promoted_at[len(promoted_at) // 2]:,})" if promoted_at else ""))  # fmt: skip


def offline_gate(trials: int, gain: float) -> str:
    rng = np.random.default_rng(7)
    promoted = 0
    for t in range(trials):
        found, _, _ = trial(rng, (55,), gain, ["gate"], t, False)
        promoted += found["gate"][0] > 0.005
    low, high = wilson(promoted, trials)
    return f"promoted {promoted / trials:6.1%} [{low:.1%}, {high:.1%}] (one look, {trials} trials)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=5, help="searches a minute (a look every minute)")
    parser.add_argument("--anonymous", type=float, default=0.3, help="share of searches without a user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gate-trials", type=int, default=400, help="0: skip the offline gate's column")
    parser.add_argument("--deltas", default=",".join(str(d) for d in DELTAS))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    w = world(rng, QUERIES)
    champion = model_scores(w, SKILL, w["champion_own"])
    base = true_ndcg(w, champion)
    print(f"champion true NDCG@10 {base:.3f}; {args.runs} challenges a row; {args.rate} searches a minute, a look "
          f"a minute; {args.anonymous:.0%} anonymous; at most {SERVED:,} searches served (interleaving: "
          f"cap {CAP:,} with feedback)", flush=True)  # fmt: skip
    for delta in (float(d) for d in args.deltas.split(",")):
        started = time.monotonic()
        skill = calibrate(rng, w, base, delta)
        challengers = [model_scores(w, skill, rng.normal(scale=OWN_SD, size=w["relevant"].shape))
                       for _ in range(CHALLENGERS)]  # fmt: skip
        truth = np.mean([true_ndcg(w, c) for c in challengers]) - base
        built = [pools(rng, w, champion, c) for c in challengers]
        inter = [interleaving_run(rng, built[int(rng.integers(CHALLENGERS))], args.anonymous, args.rate)
                 for _ in range(args.runs)]  # fmt: skip
        ab = [ab_run(rng, built[int(rng.integers(CHALLENGERS))], args.anonymous, args.rate) for _ in range(args.runs)]
        print(f"\nΔ true NDCG@10 {truth:+.3f} (row {delta:+.2f}), {time.monotonic() - started:.0f} s")
        print(f"  interleaving      {summary(inter)}")
        print(f"  A/B 50/50         {summary(ab)}")
        if args.gate_trials:
            gain = skill - SKILL
            print(f"  offline gate      {offline_gate(args.gate_trials, gain)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
