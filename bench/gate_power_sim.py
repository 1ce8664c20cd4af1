"""`bench/gate_power.py simulate`: the gate's rules on held-out sets shaped like the closed loop's.

Each query has 10 candidates, one relevant. A model's score is skill × relevant + a query effect (some
queries' documents all score high) + an error shared by all models + the model's own error. The
champion serves its ranking; position-based users (rank r examined with probability 1/r, like a relevant
result 95%, dislike half of the other examined ones, 2% flipped) judge it 1–4 times; pairs are kept once
per query and document, the latest label. The held-out set is stable: look k judges all the held-out
queries of looks 1..k (the closed loop's 55, 71, 83, 85, … queries at TEST_FRACTION 0.2; twice that at
0.4). At each look a new candidate (its own error drawn afresh) is judged against the same champion;
under the null it has the champion's skill, under the alternative it is better by as much as the closed
loop's candidates were (≈ +0.05 true NDCG@10 on all 10 candidates).
"""

from __future__ import annotations

import numpy as np
from gate_noise import wilson

from eduranker.pipeline.bootstrap import paired_bootstrap
from eduranker.pipeline.evaluation import ndcg_at_k

CANDIDATES = 10
SKILL = 2.4  # champion: true NDCG@10 ≈ 0.90 on all 10 candidates, as the closed loop's v0001 (0.898)
GAIN = 0.3  # candidate: ≈ +0.036 ROC-AUC on the judged pairs, as the gate saw round 4 of the closed loop
QUERY_SD, SHARED_SD, OWN_SD = 1.0, 0.8, 0.6
LOOKS_02 = (55, 71, 83, 85, 95)  # held-out queries per job in the closed loop (rounds 1-4, then one more)


def world(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    relevant = np.zeros((n, CANDIDATES), bool)
    relevant[:, 0] = True
    return {
        "relevant": relevant,
        "query": rng.normal(scale=QUERY_SD, size=(n, 1)),
        "shared": rng.normal(scale=SHARED_SD, size=(n, CANDIDATES)),
        "champion_own": rng.normal(scale=OWN_SD, size=(n, CANDIDATES)),
    }


def model_scores(w: dict[str, np.ndarray], skill: float, own: np.ndarray) -> np.ndarray:
    return skill * w["relevant"] + w["query"] + w["shared"] + own


def judge(
    rng: np.random.Generator, w: dict[str, np.ndarray], champion: np.ndarray, shuffled: bool = False
) -> list[tuple[int, int, float]]:
    """(query, document, label) pairs from searches served in the champion's order (`shuffled`: in a
    random order, the control: the same users, but what they judge is not chosen by the champion)."""
    pairs: dict[tuple[int, int], float] = {}
    order = np.argsort(rng.random(champion.shape) if shuffled else -champion, axis=1)
    for q in range(champion.shape[0]):
        for _ in range(rng.integers(1, 4)):
            for rank, doc in enumerate(order[q], start=1):
                if rng.random() >= 1.0 / rank:
                    continue
                rel = bool(w["relevant"][q, doc])
                if rng.random() >= (0.95 if rel else 0.5):
                    continue
                label = float(rel) if rng.random() >= 0.02 else float(not rel)
                pairs[(q, int(doc))] = label
    return [(q, d, lab) for (q, d), lab in sorted(pairs.items())]


def true_ndcg(w: dict[str, np.ndarray], scores: np.ndarray) -> float:
    order = np.argsort(-scores, axis=1)
    return float(np.mean([ndcg_at_k(w["relevant"][q, order[q]].astype(float).tolist(), 10) for q in range(len(order))]))


def lower_bound(rule: str, labels, a, b, queries, seed: int) -> float:
    """The lower end of the rule's interval (−inf where undefined): promoted when it clears the margin."""
    if len(set(labels)) < 2:
        return float("-inf")
    if rule == "per-query":
        from gate_power import per_query_interval

        names, index = np.unique(np.asarray(queries), return_inverse=True)
        _, low, _, _ = per_query_interval(np.asarray(labels), np.asarray(a), np.asarray(b), index, len(names),
                                          1000, seed)  # fmt: skip
        return float(low)
    confidence = 0.90 if rule == "gate at 90%" else 0.95
    auc = paired_bootstrap(labels, a, b, queries, samples=1000, confidence=confidence, seed=seed)["roc_auc"]
    return float("-inf") if auc.low is None else float(auc.low)


def trial(rng: np.random.Generator, looks: tuple[int, ...], gain: float, rules: list[str], seed: int, shuffled: bool):
    n = looks[-1]
    w = world(rng, n)
    champion = model_scores(w, SKILL, w["champion_own"])
    pairs = judge(rng, w, champion, shuffled)
    promoted = {rule: [] for rule in rules}
    truth = []
    for k, size in enumerate(looks):
        candidate = model_scores(w, SKILL + gain, rng.normal(scale=OWN_SD, size=(n, CANDIDATES)))
        truth.append(true_ndcg(w, candidate) - true_ndcg(w, champion))
        kept = [p for p in pairs if p[0] < size]
        labels = [p[2] for p in kept]
        a = [float(champion[q, d]) for q, d, _ in kept]
        b = [float(candidate[q, d]) for q, d, _ in kept]
        queries = [f"q{q}" for q, _, _ in kept]
        for rule in rules:
            promoted[rule].append(lower_bound(rule, labels, a, b, queries, seed * 31 + k))
    return promoted, truth, len(pairs)


def run(
    trials: int,
    looks: int,
    only: list[str] | None = None,
    arms: tuple[str, ...] = ("null", "better"),
    margins: tuple[float, ...] = (0.005,),
) -> None:
    rng = np.random.default_rng(0)
    designs = {
        "gate, TEST_FRACTION 0.2": (LOOKS_02[:looks], "gate"),
        "gate, TEST_FRACTION 0.4": (tuple(2 * q for q in LOOKS_02[:looks]), "gate"),
        "gate at 90%, TEST_FRACTION 0.2": (LOOKS_02[:looks], "gate at 90%"),
        "per-query ROC-AUC, TEST_FRACTION 0.2": (LOOKS_02[:looks], "per-query"),
        "control: gate, results shown in random order": (LOOKS_02[:looks], "gate"),
    }
    designs = {name: d for i, (name, d) in enumerate(designs.items()) if not only or str(i) in only}
    print(f"{trials} trials per row, {looks} looks on a growing stable held-out set; promotion rate [95% Wilson]")
    for name, (sizes, rule) in designs.items():
        for label, gain in (("null", 0.0), ("better", GAIN)):
            if label not in arms:
                continue
            lows, truth, n_pairs = [], [], []
            for t in range(trials):
                found, gains, pairs = trial(rng, sizes, gain, [rule], t, name.startswith("control"))
                lows.append(found[rule])
                truth.extend(gains)
                n_pairs.append(pairs)
            for margin in margins:
                promoted = np.array(lows) > margin  # trials × looks
                any_look = int(promoted.any(axis=1).sum())
                low, high = wilson(any_look, trials)
                looks_text = ", ".join(f"{x:.1%}" for x in promoted.mean(axis=0))
                rate = f"{any_look / trials:.1%} [{low:.1%}, {high:.1%}]"
                bar = "" if margins == (0.005,) else f" bar +{margin}"
                print(
                    f"{name:<38} {label:<6}{bar} queries {sizes}, ~{np.mean(n_pairs):.0f} pairs at the last look; "
                    f"true NDCG@10 {np.mean(truth):+.3f}; per look {looks_text}; any look {rate}"
                )
