"""The closed loop's rows (`bench/closed_loop.py`) reported: each round as it ends, the Done-when goals
at the end of a run, and a run's rows (`--out rows.json`) as docs/gate.md's Markdown table.

    .venv/bin/python bench/closed_loop_report.py rows.json [rows.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def print_row(row: dict[str, Any]) -> None:
    line = f"round {row['round']}: {row['reactions']} reactions ({row['top3']:.0%} at ranks 1-3) → {row['status']}"
    if "gate" in row and row["gate"][0] is not None:
        d, lo, hi = row["gate"]
        line += f" {row.get('version')}: gate ROC-AUC {d:+.3f} [{lo:+.3f}, {hi:+.3f}] on {row['heldout_pairs']} pairs"
    print(line)
    if "true_champion" in row:
        (c_ndcg, c_mrr), (n_ndcg, n_mrr) = row["true_champion"], row["true_candidate"]
        d, lo, hi = row["true_delta"]
        print(
            f"    true NDCG@10 champion {c_ndcg:.3f} → candidate {n_ndcg:.3f} ({d:+.3f} [{lo:+.3f}, {hi:+.3f}]);"
            f" MRR {c_mrr:.3f} → {n_mrr:.3f}; leakage: {row['judged_seen']} held-out queries the champion "
            f"trained on, {row['reference_leaked']} reference queries the candidate trained on"
        )
    if "never_judged" in row:
        (share, n), (share_heldout, n_heldout) = row["never_judged"]
        print(
            f"    relevant document never judged: {share:.0%} of the {n} queries searched so far, "
            f"{share_heldout:.0%} of the {n_heldout} held-out ones"
        )
    print(f"    reason: {row['reason']}")
    c = row.get("challenge")
    if c:
        f = c["figures"]
        interval = f"[{f['low']:+.3f}, {f['high']:+.3f}]" if "low" in f else "(no interval yet)"
        cost = "" if c["shown"] is None else f"; true NDCG@10 shown {c['shown']:.3f} vs champion alone {c['alone']:.3f}"
        print(f"    challenge {c['outcome']} after {c['searches']} searches: {f.get('impressions', 0)} interleaved "
              f"with feedback ({f.get('feedback', 0)} feedbacks, {f.get('users', [0])[0]} users), credit "
              f"{f.get('estimate', float('nan')):+.3f} {interval}{cost}")  # fmt: skip


def replaced_by_as_good(row: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether `row`'s challenger was still under test when the next round's candidate replaced it,
    and that candidate is truly at least as good: users then judge the newer one instead."""
    challenge = row.get("challenge") or {}
    later = next((r for r in rows if r["round"] == row["round"] + 1), None)
    if challenge.get("outcome") not in ("running", "replaced") or later is None or "true_candidate" not in later:
        return False
    return bool(later.get("challenge")) and later["true_candidate"][0] >= row["true_candidate"][0]


def goals(rows: list[dict[str, Any]], final_ndcg: float) -> None:
    judged = [r for r in rows if "true_delta" in r]
    promoted = [r for r in judged if r["promoted"]]
    worst = min((r["true_delta"][0] for r in promoted), default=0.0)
    challenged = any("challenge" in r for r in rows)
    missed = [
        r["round"]
        for r in judged
        if r["true_delta"][0] >= 0.03
        and (challenged or (r["heldout_pairs"] or 0) >= 200)
        and not r["promoted"]
        and not replaced_by_as_good(r, rows)
    ]
    first = next((r["round"] for r in rows if r.get("serving_after")), None)
    shown = [(c["shown"], c["alone"]) for r in rows if (c := r.get("challenge")) and c["shown"] is not None]
    cost = float(np.mean([a - s for s, a in shown])) if shown else 0.0
    best = max((r["true_candidate"][0] for r in judged), default=0.0)
    print(
        f"goals: leakage {sum(r['judged_seen'] for r in judged)} / {sum(r['reference_leaked'] for r in judged)}"
        f" (want 0 / 0); worst promotion {worst:+.3f} NDCG@10 (want ≥ −0.01); final champion {final_ndcg:.3f} vs "
        f"best candidate {best:.3f} (want within 0.01); truly better by ≥ 0.03 with ≥ 200 held-out pairs but not "
        f"promoted: rounds {missed or 'none'}"
    )
    leaked = sum(r["judged_seen"] + r["reference_leaked"] for r in judged)
    verdicts = {
        "0 held-out queries the judged champion trained on, 0 reference queries the candidate trained on": leaked == 0,
        "no promotion lowers the champion's true NDCG@10 by more than 0.01": worst >= -0.01,
        "the final champion is within 0.01 of the best candidate the run trained": final_ndcg >= best - 0.01,
        "every candidate truly better by >= 0.03 NDCG@10"
        + ("" if challenged else " with >= 200 held-out pairs")
        + " is promoted"
        + (", unless an as good one replaced it" if challenged else ""): not missed,
    }
    if challenged:
        verdicts[f"the first model serves by the end of round 1 (it served after round {first})"] = (
            first is not None and first <= 1
        )
        verdicts[f"what users were shown during challenges is within 0.01 of the champion alone ({-cost:+.3f})"] = (
            cost <= 0.01
        )
    for goal, met in verdicts.items():
        print(f"    done-when: {goal}: {'met' if met else 'NOT met'}")


def interval(d: float, lo: float, hi: float) -> str:
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def challenge_cell(c: dict[str, Any] | None, last: bool) -> str:
    if not c:
        return "–"
    f = c["figures"]
    credit = interval(f["estimate"], f["low"], f["high"]) if "low" in f else "no interval yet"
    outcome = c["outcome"]
    if outcome == "running":  # the bench's cap; the next round's candidate replaces it
        outcome = "undecided at the bench's cap" + ("" if last else ", replaced next round")
    return (
        f"**{outcome}** after {c['searches']:,} searches ({f.get('impressions', 0):,} interleaved with "
        f"feedback, {f.get('users', [0])[0]} users), credit {credit}"
    )


def row_line(row: dict[str, Any], last: bool) -> str:
    gate = row.get("gate") or (None,)
    screen = "–" if gate[0] is None else f"{interval(*gate)} on {row['heldout_pairs']} pairs"
    truth = "–"
    if "true_candidate" in row:
        truth = (
            f"{row['true_champion'][0]:.3f} → {row['version']} {row['true_candidate'][0]:.3f} "
            f"({interval(*row['true_delta'])})"
        )
    c = row.get("challenge") or {}
    shown = "–" if c.get("shown") is None else f"{c['shown']:.3f} vs {c['alone']:.3f}"
    return f"| {row['round']} | {screen} | {challenge_cell(c, last)} | {truth} | {shown} | {row['serving_after']} |"


def main() -> int:
    for path in sys.argv[1:]:
        print(f"\n{path}\n")
        print("| round | screen: ROC-AUC change on held-out pairs | challenge | true NDCG@10 champion → candidate "
              "(Δ [95% CI]) | shown vs champion alone | champion after |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        rows = json.loads(Path(path).read_text())
        for i, row in enumerate(rows):
            print(row_line(row, i == len(rows) - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
