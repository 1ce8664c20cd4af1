"""Human-readable outputs of a job: PNG plots and `training_report.txt`. Pure: data in, files out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from eduranker.pipeline.evaluation import METRICS, roc_points
from eduranker.records import IntervalDoc, StoredGate

PLOTS = (
    "label_distribution.png",
    "query_length_histogram.png",
    "metrics_before_after.png",
    "score_distributions.png",
    "confusion_matrix.png",
    "roc_curve.png",
)


def _figure(
    width: float, height: float, *, left: float, bottom: float, top: float = 0.35, right: float = 0.2, ncols: int = 1
) -> tuple[Any, Any]:
    """A figure and its axes, its margins given in inches (room for the tick labels, axis labels and title
    each chart has). A fixed layout: matplotlib's `tight_layout` drew each figure an extra time to measure
    it, a third of the plots' CPU. No pyplot: nothing to close, no display needed on a worker."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height)
    axes = fig.subplots(1, ncols, sharey=ncols > 1)
    return fig, axes


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
    y = np.asarray(test_labels, dtype=int)
    _label_chart(folder / PLOTS[0], label_counts)
    _length_histogram(folder / PLOTS[1], query_lengths)
    _metrics_chart(folder / PLOTS[2], before, after)
    _score_histograms(folder / PLOTS[3], y, scores_before, scores_after)
    _confusion_matrix(folder / PLOTS[4], np.asarray(after["confusion_matrix"]))
    _roc_curves(folder / PLOTS[5], y, {"before": (scores_before, before), "after": (scores_after, after)})
    return list(PLOTS)


def _label_chart(path: Path, label_counts: dict[str, int]) -> None:
    fig, ax = _figure(4, 3, left=0.85, bottom=0.55)
    ax.bar(list(label_counts), list(label_counts.values()), color=["#4c9f70", "#c8553d"])
    ax.set(title="Feedback labels in the snapshot", xlabel="feedback", ylabel="pairs")
    _save(fig, path)


def _length_histogram(path: Path, query_lengths: Sequence[int]) -> None:
    fig, ax = _figure(5, 3, left=0.85, bottom=0.55)
    ax.hist(query_lengths, bins=30, color="#3c6e9f", histtype="stepfilled")
    ax.set(title="Query length (words)", xlabel="words", ylabel="pairs")
    _save(fig, path)


def _metrics_chart(path: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    # One axis, "higher is better": a lower-is-better metric is in the report's table, not on this chart.
    shown = [m.name for m in METRICS if m.higher_is_better]
    keys = [k for k in shown if before.get(k) is not None or after.get(k) is not None]
    x = np.arange(len(keys))
    fig, ax = _figure(7, 3.5, left=0.75, bottom=1.15)
    ax.bar(x - 0.2, [before.get(k) or 0 for k in keys], 0.4, label="before")
    ax.bar(x + 0.2, [after.get(k) or 0 for k in keys], 0.4, label="after")
    ax.set_xticks(x, keys, rotation=30, ha="right")
    # Head room above 1.0 for the legend, so it covers no bar.
    ax.set(ylim=(0, 1.25), yticks=np.linspace(0, 1, 6), title="Held-out metrics", ylabel="value (higher is better)")
    ax.legend(loc="upper center", ncols=2, frameon=False)
    _save(fig, path)


def _score_histograms(path: Path, y: np.ndarray, before: Sequence[float], after: Sequence[float]) -> None:
    fig, axes = _figure(8, 3, left=0.75, bottom=0.55, ncols=2)
    for ax, scores, name in zip(axes, (before, after), ("before", "after"), strict=True):
        s = np.asarray(scores)
        # One outline per histogram ("stepfilled"), not a rectangle per bin: a tenth of the artists to draw.
        ax.hist(s[y == 1], bins=20, range=(0, 1), alpha=0.6, label="like", histtype="stepfilled")
        ax.hist(s[y == 0], bins=20, range=(0, 1), alpha=0.6, label="dislike", histtype="stepfilled")
        ax.set(title=f"Scores {name}", xlabel="score (held-out pairs)")
    axes[0].set_ylabel("pairs")
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.6)  # head room: the legend sits above every bar
    axes[1].legend(title="actual", loc="upper center", ncols=2, frameon=False)
    _save(fig, path)


def _confusion_matrix(path: Path, matrix: np.ndarray) -> None:
    fig, ax = _figure(3.5, 3.2, left=1.0, bottom=0.7)
    ax.imshow(matrix, cmap="Blues")
    dark = matrix.max() / 2  # counts on the darker cells are written in white
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, str(count), ha="center", va="center", color="white" if count > dark else "black")
    names = ["dislike", "like"]
    ax.set(xticks=[0, 1], xticklabels=names, yticks=[0, 1], yticklabels=names)
    ax.set(xlabel="Predicted label", ylabel="True label", title="Confusion (after)")
    _save(fig, path)


def _roc_curves(path: Path, y: np.ndarray, models: dict[str, tuple[Sequence[float], dict[str, Any]]]) -> None:
    """Each model's curve, labelled with its stored ROC-AUC (the area under that curve)."""
    fig, ax = _figure(4, 5, left=0.75, bottom=1.55)
    if len(set(y.tolist())) == 2:  # a curve needs both classes
        for name, (scores, metrics) in models.items():
            ax.plot(*roc_points(y, scores), label=f"{name} (AUC = {metrics['roc_auc']:.2f})")
        ax.plot([0, 1], [0, 1], "k--", label="Chance level (AUC = 0.5)")
        # Below the axes: inside, it would hide part of a curve.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out)")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=100)


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
