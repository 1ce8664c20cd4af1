"""Human-readable outputs of a job: PNG plots and `training_report.txt`. Pure: data in, files out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from eduranker.pipeline.evaluation import METRICS
from eduranker.records import IntervalDoc, StoredGate

PLOTS = (
    "label_distribution.png",
    "query_length_histogram.png",
    "metrics_before_after.png",
    "score_distributions.png",
    "confusion_matrix.png",
    "roc_curve.png",
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def write_plots(
    folder: Path,
    *,
    label_counts: dict[str, int],
    query_lengths: Sequence[int],
    before: dict[str, Any],
    after: dict[str, Any],
    test_labels: Sequence[float],
    scores_before: Sequence[float],
    scores_after: Sequence[float],
) -> list[str]:
    """The version's PNG plots, one function each; returns their file names."""
    plt = _pyplot()
    y = np.asarray(test_labels, dtype=int)
    _label_chart(plt, folder / PLOTS[0], label_counts)
    _length_histogram(plt, folder / PLOTS[1], query_lengths)
    _metrics_chart(plt, folder / PLOTS[2], before, after)
    _score_histograms(plt, folder / PLOTS[3], y, scores_before, scores_after)
    _confusion_matrix(plt, folder / PLOTS[4], np.asarray(after["confusion_matrix"]))
    _roc_curves(plt, folder / PLOTS[5], y, scores_before, scores_after)
    return list(PLOTS)


def _label_chart(plt: Any, path: Path, label_counts: dict[str, int]) -> None:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(list(label_counts), list(label_counts.values()), color=["#4c9f70", "#c8553d"])
    ax.set(title="Feedback labels in the snapshot", xlabel="feedback", ylabel="pairs")
    _save(fig, path)


def _length_histogram(plt: Any, path: Path, query_lengths: Sequence[int]) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(query_lengths, bins=30, color="#3c6e9f")
    ax.set(title="Query length (words)", xlabel="words", ylabel="pairs")
    _save(fig, path)


def _metrics_chart(plt: Any, path: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    # One axis, "higher is better": a lower-is-better metric is in the report's table, not on this chart.
    shown = [m.name for m in METRICS if m.higher_is_better]
    keys = [k for k in shown if before.get(k) is not None or after.get(k) is not None]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x - 0.2, [before.get(k) or 0 for k in keys], 0.4, label="before")
    ax.bar(x + 0.2, [after.get(k) or 0 for k in keys], 0.4, label="after")
    ax.set_xticks(x, keys, rotation=30, ha="right")
    # Head room above 1.0 for the legend, so it covers no bar.
    ax.set(ylim=(0, 1.25), yticks=np.linspace(0, 1, 6), title="Held-out metrics", ylabel="value (higher is better)")
    ax.legend(loc="upper center", ncols=2, frameon=False)
    _save(fig, path)


def _score_histograms(plt: Any, path: Path, y: np.ndarray, before: Sequence[float], after: Sequence[float]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, scores, name in zip(axes, (before, after), ("before", "after"), strict=True):
        s = np.asarray(scores)
        ax.hist(s[y == 1], bins=20, range=(0, 1), alpha=0.6, label="like")
        ax.hist(s[y == 0], bins=20, range=(0, 1), alpha=0.6, label="dislike")
        ax.set(title=f"Scores {name}", xlabel="score (held-out pairs)")
    axes[0].set_ylabel("pairs")
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.6)  # head room: the legend sits above every bar
    axes[1].legend(title="actual", loc="upper center", ncols=2, frameon=False)
    _save(fig, path)


def _confusion_matrix(plt: Any, path: Path, matrix: np.ndarray) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(3.5, 3.2))
    ConfusionMatrixDisplay(matrix, display_labels=["dislike", "like"]).plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set(title="Confusion (after)")
    _save(fig, path)


def _roc_curves(plt: Any, path: Path, y: np.ndarray, before: Sequence[float], after: Sequence[float]) -> None:
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(4, 5))
    if len(set(y.tolist())) == 2:  # a curve needs both classes
        RocCurveDisplay.from_predictions(y, before, name="before", ax=ax)
        RocCurveDisplay.from_predictions(y, after, name="after", ax=ax, plot_chance_level=True)
        # Below the axes: inside, it would hide part of a curve.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out)")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)  # pyplot lets go of it; clearing it first (`clf`) cost a sixth of the plots' CPU


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _interval_line(name: str, found: IntervalDoc, confidence: str, evidence: str, undefined: str = "") -> str:
    """One interval of a change as the report prints it: `name delta  95% CI [low, high] <evidence>`."""
    if found.get("low") is None:
        return f"  {name:<18} undefined{undefined}"
    return (
        f"  {name:<18} {found['delta']:+.4f}  {found['confidence']:{confidence}} CI "
        f"[{found['low']:+.4f}, {found['high']:+.4f}] {evidence}"
    )


def stored_intervals(version: Mapping[str, Any]) -> dict[str, IntervalDoc]:
    """The gate's intervals of a version's (or its metadata's) metrics: `gate.intervals`, or
    `metrics.intervals` where a version from before holds them only there."""
    gate, metrics = version.get("gate"), version.get("metrics")
    found = (gate.get("intervals") if isinstance(gate, dict) else None) or (
        metrics.get("intervals") if isinstance(metrics, dict) else None
    )
    return cast(dict[str, IntervalDoc], found or {})


def metric_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per registered metric: before, after and the change (a lower-is-better metric marked)."""
    lines = []
    for metric in METRICS:
        b, a = before.get(metric.name), after.get(metric.name)
        change = "" if a is None or b is None else f"{a - b:+.4f}"
        name = metric.name if metric.higher_is_better else f"{metric.name} (lower is better)"
        lines.append(f"{name:<20}{_fmt(b):>10}{_fmt(a):>10}{change:>10}")
    return lines


def judging_lines(gate: StoredGate, split: Mapping[str, Any]) -> list[str]:
    """What the models were judged on (the stable split, what was left out) and the per-slice intervals."""
    lines: list[str] = []
    fairness = gate.get("fairness") or {}
    if split.get("epoch") is not None:
        lines.append(
            f"  split epoch {split['epoch']} (test fraction {split.get('test_fraction')}); judged on "
            f"{gate.get('heldout_pairs')} held-out pairs, {fairness.get('excluded_champion_trained', 0)} left out "
            f"because the champion trained on them"
            + ("; the champion may have seen some judged pairs" if fairness.get("champion_may_have_seen") else "")
        )
    slices = gate.get("slices") or {}
    if slices:
        lines += ["", f"Slices ({METRICS.primary.label} change, Bonferroni-corrected intervals)"]
        for name, found in slices.items():
            size = f"{found['pairs']} pairs"
            lines.append(
                _interval_line(name, found, ".1%", f"on {size} / {found.get('queries')} queries", f" ({size})")
            )
    return lines


def render_report(meta: dict[str, Any]) -> str:
    """The plain-text summary a person reads first."""
    snap, before, after = meta["snapshot"], meta["metrics"]["before"], meta["metrics"]["after"]
    lines = [
        f"EduRanker training report — {meta['version']} (job {meta['job_id']})",
        "=" * 72,
        f"Base model:        {meta['base_model']}",
        f"Compared against:  {meta['compared_against']}",
        f"Device:            {meta['device']}",
        f"Decision:          {'PROMOTED' if meta['promoted'] else 'not promoted'} — {meta['gate_reason']}",
        "",
        "Data",
        f"  rows read {snap['rows_seen']}, usable pairs {snap['pairs']} "
        f"(like {snap['label_counts']['like']}, dislike {snap['label_counts']['dislike']})",
        f"  train {meta['split']['train']} / held-out {meta['split']['test']} pairs, "
        f"{meta['split']['test_queries']} held-out queries",
        f"  skipped {snap['skipped_total']}: " + (", ".join(f"{k}={v}" for k, v in snap["skipped"].items()) or "none"),
        f"  duplicates superseded {snap['duplicates_superseded']}, texts truncated {snap['texts_truncated']}",
        "",
        "Hyperparameters",
        "  " + ", ".join(f"{k}={v}" for k, v in meta["hyperparameters"].items()),
        "",
        f"{'metric':<20}{'before':>10}{'after':>10}{'change':>10}",
    ]
    lines += metric_lines(before, after)
    intervals = stored_intervals(meta)
    if intervals:
        lines += ["", "Gate evidence (paired bootstrap over held-out queries, change after − before)"]
        for name, interval in intervals.items():
            lines.append(_interval_line(name, interval, ".0%", f"over {interval.get('samples')} resamples"))
    gate: StoredGate = meta.get("gate") or StoredGate()
    reference = gate.get("reference")
    if reference and reference.get("low") is not None:
        lines.append(
            f"  on the champion's frozen pairs ({reference['pairs']} pairs): {reference['delta']:+.4f} "
            f"[{reference['low']:+.4f}, {reference['high']:+.4f}]"
        )
    lines += judging_lines(gate, meta.get("split") or {})
    train = meta["training"]
    lines += [
        "",
        f"Training: {train['steps']} steps in {train['seconds']} s "
        f"({train['pairs_per_second']} pairs/s), epoch losses {train['epoch_losses']}",
        "Timings (s): " + ", ".join(f"{k}={v}" for k, v in meta["timings"].items()),
        "",
        "Plots: " + ", ".join(meta["plots"]),
    ]
    return "\n".join(lines) + "\n"
