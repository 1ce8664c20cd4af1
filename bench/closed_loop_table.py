"""The closed loop's rows (`bench/closed_loop.py --out rows.json`) as a Markdown table, as docs/gate.md
shows them.

    .venv/bin/python bench/closed_loop_table.py rows.json [rows.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


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
