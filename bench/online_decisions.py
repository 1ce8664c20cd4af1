"""The online guard's error rate under continuous monitoring, and holdback versus interleaving power.

Simulates live traffic minute by minute (no servers): users arrive at random, each reacts 5 to 20
times over one to three sessions spread over days, and each user has a like propensity of their own
(Beta(3, 2), mean 0.6), so reactions are clustered by user. The guard is evaluated every minute.

1. Equal models, 20 feedbacks a minute, 30 days, a check every minute (43,200 looks): how often is the
   good champion rolled back? The old rule (a pooled two-proportion z-test at each look, reactions
   treated as independent) beside the sequential test of `producer.sequential` (an mSPRT on the
   cluster-robust estimate), for a 5% holdback and for interleaving every request.
2. A champion whose documents are 10% less often liked: the feedbacks (site-wide) until the guard
   rolls it back, and the days that takes at 50 feedbacks a day, for a 5% holdback, a 50% holdback and
   interleaving (on every request and on 5% of them).

3. With --e2e-days N: the producer's own refresh and guard on a real SecantusDB, once a simulated day.

Anonymous traffic (30% of the feedback, liked less often): bench/online_anonymous.py.

    .venv/bin/python bench/online_decisions.py [--runs 2000] [--interleave-runs 600] [--seed 0] [--e2e-days 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producer.guard import HOLDBACK_TAU, INTERLEAVE_TAU, MIN_CLUSTERS  # noqa: E402
from producer.sequential import radius  # noqa: E402

PER_MINUTE = 20.0  # feedbacks a minute
MIN_FEEDBACK = 200  # ONLINE_GUARD_MIN_FEEDBACK's default
ALPHA = 0.01  # ONLINE_GUARD_CONFIDENCE 0.99
SESSION_GAP_MIN = 1440.0  # mean gap between a user's sessions: a day


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def np_radius(v: np.ndarray, tau2: float) -> np.ndarray:
    """`producer.sequential.radius`, vectorised (checked against it at start)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / ALPHA) + np.log((v + tau2) / v)))


@dataclass
class Events:
    """Per-event increments, events grouped by user (contiguous) and in time order within a user."""

    user: np.ndarray  # index of the user, non-decreasing
    minute: np.ndarray
    num: np.ndarray  # likes (holdback) or credits (interleaving)
    den: np.ndarray  # feedbacks (holdback) or impressions (interleaving)
    feedback: np.ndarray  # reactions in the event


def users(rng: np.random.Generator, minutes: int, share: float = 1.0) -> tuple[np.ndarray, ...]:
    """Users arriving over `minutes`: (start minute, reactions, propensity, arm: True = compared side)."""
    n = rng.poisson(PER_MINUTE * minutes / 12.5)
    return (rng.uniform(0, minutes, n), rng.integers(5, 21, n), rng.beta(3.0, 2.0, n), rng.random(n) < share)


def sessions(rng: np.random.Generator, start: np.ndarray, reactions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each user's reactions split over 1 to 3 sessions a day apart on average: (user, minute, reactions)."""
    count = np.minimum(rng.integers(1, 4, len(start)), reactions)
    user = np.repeat(np.arange(len(start)), count)
    first = np.cumsum(count) - count  # index of each user's first session
    within = np.arange(len(user)) - first[user]
    gaps = np.where(within == 0, 0.0, rng.exponential(SESSION_GAP_MIN, len(user)))
    cum = np.cumsum(gaps)
    minute = start[user] + cum - cum[first[user]]
    base = reactions[user] // count[user]
    size = base + (within < reactions[user] - base * count[user])
    return user, minute, size


def holdback_events(rng: np.random.Generator, minutes: int, share: float, worse: float) -> tuple[Events, Events]:
    """(champion's events, holdback's events)."""
    start, reactions, p, held = users(rng, minutes, share)
    user, minute, size = sessions(rng, start, reactions)
    arm = held[user]
    likes = rng.binomial(size, np.where(arm, p[user], p[user] * (1 - worse)))
    return tuple(  # type: ignore[return-value]
        Events(user[side], minute[side], likes[side].astype(float), size[side].astype(float), size[side])
        for side in (~arm, arm)
    )


def interleave_events(rng: np.random.Generator, minutes: int, share: float, worse: float) -> tuple[Events, Events]:
    """(interleaved impressions' events, the others' (feedback only)); each impression draws 1 to 3
    reactions, each on a document from either team with probability 1/2 (team draft)."""
    start, reactions, p, mixed = users(rng, minutes, share)
    user, minute, size = sessions(rng, start, reactions)
    owner = np.repeat(np.arange(len(size)), size)  # the session of each reaction
    pos = np.arange(size.sum()) - (np.cumsum(size) - size)[owner]
    group = pos // rng.integers(1, 4, len(size))[owner]  # runs of 1 to 3 reactions: one search each
    new = np.r_[True, (owner[1:] != owner[:-1]) | (group[1:] != group[:-1])]  # sorted already: no np.unique
    imp = np.cumsum(new) - 1
    m = np.bincount(imp).astype(np.int64)
    imp_session = owner[new]
    pu = p[user[imp_session]]
    champ = rng.binomial(m, 0.5)
    like_c = rng.binomial(champ, pu * (1 - worse))
    like_b = rng.binomial(m - champ, pu)
    credit = np.sign((2 * like_c - champ) - (2 * like_b - (m - champ))).astype(float)
    compared = mixed[user[imp_session]]
    inter = Events(user[imp_session][compared], minute[imp_session][compared], credit[compared],
                   np.ones(int(compared.sum())), m[compared])  # fmt: skip
    other = Events(user[imp_session][~compared], minute[imp_session][~compared], np.zeros(int((~compared).sum())),
                   np.ones(int((~compared).sum())), m[~compared])  # fmt: skip
    return inter, other


def running(e: Events, minutes: int) -> dict[str, np.ndarray]:
    """Cumulative sums per minute of what the cluster-robust variance needs (sum num, sum den, clusters,
    sum num_c^2, sum num_c den_c, sum den_c^2 over clusters as they stand at that minute)."""
    keep = e.minute < minutes
    user, minute, num, den = e.user[keep], e.minute[keep].astype(np.int64), e.num[keep], e.den[keep]
    first = np.r_[True, user[1:] != user[:-1]]
    start_idx = np.maximum.accumulate(np.where(first, np.arange(len(user)), 0))
    cum_n, cum_d = np.cumsum(num), np.cumsum(den)
    now_n = cum_n - (cum_n[start_idx] - num[start_idx])  # the cluster's totals after this event
    now_d = cum_d - (cum_d[start_idx] - den[start_idx])
    old_n, old_d = now_n - num, now_d - den
    inc = {
        "num": num, "den": den, "clusters": first.astype(float), "feedback": e.feedback[keep].astype(float),
        "nn": now_n**2 - old_n**2, "nd": now_n * now_d - old_n * old_d, "dd": now_d**2 - old_d**2,
    }  # fmt: skip
    return {k: np.cumsum(np.bincount(minute, weights=w, minlength=minutes)) for k, w in inc.items()}


def ratio(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = s["num"] / s["den"]
        spread = s["nn"] - 2 * r * s["nd"] + r * r * s["dd"]
        g = s["clusters"]
        var = np.where(g > 1, g / (g - 1) * spread / s["den"] ** 2, np.inf)
    return r, var


def first_rollback(high: np.ndarray, ready: np.ndarray) -> int | None:
    hits = np.flatnonzero(ready & (high < 0))
    return int(hits[0]) if len(hits) else None


def holdback_run(rng: np.random.Generator, minutes: int, share: float, worse: float) -> tuple[int | None, ...]:
    """(minute of the sequential rollback, minute of the old rule's rollback, site feedback per minute)."""
    champ, held = (running(e, minutes) for e in holdback_events(rng, minutes, share, worse))
    (rc, vc), (rh, vh) = ratio(champ), ratio(held)
    ready = (np.minimum(champ["den"], held["den"]) >= MIN_FEEDBACK) & (
        np.minimum(champ["clusters"], held["clusters"]) >= MIN_CLUSTERS
    )
    diff = rc - rh
    seq = first_rollback(diff + np_radius(vc + vh, HOLDBACK_TAU**2), ready)
    pooled = (champ["num"] + held["num"]) / np.maximum(champ["den"] + held["den"], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / np.sqrt(pooled * (1 - pooled) * (1 / champ["den"] + 1 / held["den"]))
    old = first_rollback(np.where(z < -2.326, -1.0, 1.0), np.minimum(champ["den"], held["den"]) >= MIN_FEEDBACK)
    return seq, old, _feedback_at(champ, held, seq)


def interleave_run(rng: np.random.Generator, minutes: int, share: float, worse: float) -> tuple[int | None, ...]:
    inter, other = (running(e, minutes) for e in interleave_events(rng, minutes, share, worse))
    est, var = ratio(inter)
    ready = (inter["feedback"] >= MIN_FEEDBACK) & (inter["clusters"] >= MIN_CLUSTERS)
    seq = first_rollback(est + np_radius(var, INTERLEAVE_TAU**2), ready)
    return seq, None, _feedback_at(inter, other, seq)


def _feedback_at(a: dict[str, np.ndarray], b: dict[str, np.ndarray], minute: int | None) -> int | None:
    return None if minute is None else int(a["feedback"][minute] + b["feedback"][minute])


def rate(hits: int, runs: int) -> str:
    low, high = wilson(hits, runs)
    return f"{hits / runs:6.2%} [{low:.2%}, {high:.2%}]"


def false_rollbacks(rng: np.random.Generator, runs: int, interleave_runs: int) -> None:
    minutes = 30 * 1440
    print(f"1. equal models, 30 days checked every minute ({minutes} looks), {PER_MINUTE:.0f} feedbacks a minute,")
    print(f"   users reacting 5-20 times each; false rollbacks (95% Wilson interval), alpha {ALPHA}")
    hold = [holdback_run(rng, minutes, 0.05, 0.0) for _ in range(runs)]
    inter = [interleave_run(rng, minutes, 1.0, 0.0) for _ in range(interleave_runs)]
    print(f"   {f'5% holdback, old rule (z-test at each look, reactions independent), {runs} runs':<80}"
          f"{rate(sum(h[1] is not None for h in hold), runs)}")  # fmt: skip
    print(f"   {f'5% holdback, sequential test (mSPRT, clustered by user), {runs} runs':<80}"
          f"{rate(sum(h[0] is not None for h in hold), runs)}")  # fmt: skip
    print(f"   {f'interleaving every request, sequential test (clustered by user), {interleave_runs} runs':<80}"
          f"{rate(sum(h[0] is not None for h in inter), interleave_runs)}")  # fmt: skip


def power(rng: np.random.Generator, runs: int, worse: float) -> None:
    print(f"2. champion's documents {worse:.0%} less often liked: site feedbacks until the rollback ({runs} runs;")
    print("   median and 90th percentile; days at 50 feedbacks a day; runs decided within the horizon)")
    cases = [
        ("5% holdback", holdback_run, 0.05, 400 * 1440 // 20),
        ("50% holdback", holdback_run, 0.5, 40 * 1440 // 20),
        ("interleaving 5% of requests", interleave_run, 0.05, 400 * 1440 // 20),
        ("interleaving every request", interleave_run, 1.0, 40 * 1440 // 20),
    ]
    medians = {}
    for name, run, share, minutes in cases:
        needed = [r[2] for r in (run(rng, minutes, share, worse) for _ in range(runs))]
        got = np.array([n for n in needed if n is not None], dtype=float)
        if not len(got):
            print(f"   {name:<30} no decision within {minutes * PER_MINUTE:,.0f} feedbacks")
            continue
        med, p90 = np.median(got), np.percentile(got, 90)
        medians[name] = med
        days = f"median {med:>9,.0f} ({med / 50:>6,.0f} days)   90th pct {p90:>9,.0f} ({p90 / 50:>6,.0f} days)"
        print(f"   {name:<30} {days}   decided {len(got)}/{runs}")
    for base in ("5% holdback", "50% holdback"):
        for other in ("interleaving every request", "interleaving 5% of requests"):
            if base in medians and other in medians:
                print(f"   {base} needs {medians[base] / medians[other]:.1f}x the feedbacks of {other}")


def _small_site_day(db, rng, day, at, worse: float, propensity: np.ndarray) -> int:  # noqa: ANN001
    """One day of a small site interleaving every request: about 50 feedbacks on 4-result searches."""
    from bson import ObjectId

    queries, results, feedback = [], [], 0
    for _ in range(rng.poisson(25)):
        user = int(rng.integers(len(propensity)))
        query = {"_id": ObjectId(), "query_text": "q", "user_id": f"user-{user}", "created_at": at}
        queries.append(query)
        teams = ["v0002", "v0001"] if rng.random() < 0.5 else ["v0001", "v0002"]
        for rank, version in enumerate(teams * 2, start=1):
            doc = {"query_id": query["_id"], "resource_id": ObjectId(), "rank": rank, "model_version": version,
                   "created_at": at}  # fmt: skip
            if rng.random() < 0.5:
                p = propensity[user] * (1 - worse if version == "v0002" else 1.0)
                doc["feedback"] = "like" if rng.random() < p else "dislike"
                feedback += 1
            results.append(doc)
    if queries:
        db.user_queries.insert_many(queries)
        db.inferences.insert_many(results)
    return feedback


def end_to_end(days: int, seed: int) -> None:
    """The producer's own refresh (`producer.online_refresh.refresh_online`) on a real SecantusDB, once a
    simulated day: interleaving every request at 50 feedbacks a day, the champion's documents 30% less often
    liked (a small case: it decides within weeks), then equal models."""
    import tempfile
    from datetime import timedelta

    from pymongo import MongoClient

    from console.localservers import mongo_url, secantus_server
    from eduranker import champion
    from eduranker.settings import Settings
    from eduranker.store import ensure_indexes, versions
    from producer.online_refresh import refresh_online
    from tests.fake_versions import make_version

    print("3. end to end: the producer's refresh and guard on a real SecantusDB, once a simulated day,")
    print("   a small site interleaving every request (about 50 feedbacks a day, 300 users)")
    with tempfile.TemporaryDirectory() as tmp:
        server = secantus_server(Path(tmp) / "secantus").start()
        try:
            for worse in (0.30, 0.0):
                settings = Settings(mongodb_url=mongo_url(server.port), mongodb_db=f"bench_{int(worse * 100)}",
                                    models_dir=str(Path(tmp) / f"models{int(worse * 100)}"))  # fmt: skip
                client: MongoClient = MongoClient(settings.mongodb_url, tz_aware=True)
                db = client[settings.mongodb_db]
                ensure_indexes(db)
                for v in ("v0001", "v0002"):
                    make_version(settings.models_dir, v)
                    versions.insert_version(db, {"version": v, "job_id": f"job-{v}"})
                    champion.promote(db, settings.models_dir, v, by="bench", reason="bench")
                since = versions.get_version(db, "v0002")["promoted_at"]
                rng = np.random.default_rng(seed)
                propensity = rng.beta(3.0, 2.0, 300)
                total, outcome = 0, f"not rolled back in {days} days"
                for day in range(days):
                    total += _small_site_day(db, rng, day, since + timedelta(days=day, seconds=1), worse, propensity)
                    decision = refresh_online(db, settings)
                    if decision is not None and decision.rollback:
                        record = versions.read_champion(db)
                        outcome = (
                            f"rolled back on day {day + 1} after {total:,} feedbacks; champion now {record.version}"
                        )
                        break
                label = f"champion's documents {worse:.0%} less often liked" if worse else "equal models"
                print(f"   {label:<44} {outcome}")
                client.close()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="holdback runs for the false-rollback rate")
    parser.add_argument("--interleave-runs", type=int, default=600, help="interleaving runs for it")
    parser.add_argument("--power-runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--e2e-days", type=int, default=0, help="also run the end-to-end case (e.g. 40 days)")
    args = parser.parse_args()
    for v in (1e-4, 1e-3, 0.01):  # the bench's vectorised bound is the guard's own
        assert math.isclose(float(np_radius(np.array([v]), 0.0025)[0]), radius(v, 0.0025, ALPHA), rel_tol=1e-9)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    false_rollbacks(rng, args.runs, args.interleave_runs)
    power(rng, args.power_runs, 0.10)
    if args.e2e_days:
        end_to_end(args.e2e_days, args.seed)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
