"""The metric registry: one entry in `eduranker.pipeline.evaluation` is all a new metric needs.

A throwaway metric (precision at 1, per query, bootstrapped, with a column) is registered and, without
any other change, the stored metrics, the gate's bootstrap evidence, the training report and the
versions table all carry it; unregistered, it is gone from each.
"""

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from console import cli
from eduranker.pipeline.bootstrap import paired_bootstrap
from eduranker.pipeline.evaluation import (
    METRICS,
    Metric,
    MetricRegistry,
    change_over_queries,
    compute_metrics,
    mean_over_queries,
)
from eduranker.pipeline.gate import GateRule, PairedScores, decide_promotion
from eduranker.pipeline.report import render_report

RNG = np.random.default_rng(3)
LABELS = [1.0, 0.0] * 30
QUERIES = [f"q{i // 4}" for i in range(60)]  # 15 queries of 4 pairs, each with a like
CHAMPION = RNG.uniform(size=60)
CANDIDATE = np.clip(np.asarray(LABELS) * 0.6 + RNG.uniform(size=60) * 0.4, 0, 1)
RULE = GateRule(min_improvement=0.005, confidence=0.95, samples=200, min_pairs=40, min_queries=8, max_regression=0.02,
                seed=0, slice_min_pairs=100)  # fmt: skip


def precision_at_1(labels_by_score: Sequence[float]) -> float:
    return float(labels_by_score[0] > 0)


@pytest.fixture
def p_at_1() -> Iterator[Metric]:
    metric = METRICS.register(
        Metric(
            "p@1",
            "precision at 1",
            mean_over_queries(precision_at_1),
            change_over_queries(precision_at_1),
            column=True,
        )
    )
    yield metric
    METRICS.unregister(metric.name)


def _meta(before: dict, after: dict, intervals: dict) -> dict:
    return {
        "version": "v0002",
        "job_id": "job-1",
        "base_model": "tiny",
        "compared_against": "v0001",
        "device": "cpu",
        "promoted": True,
        "gate_reason": "clears the bar",
        "snapshot": {
            "rows_seen": 60,
            "pairs": 60,
            "label_counts": {"like": 30, "dislike": 30},
            "skipped_total": 0,
            "skipped": {},
            "duplicates_superseded": 0,
            "texts_truncated": 0,
        },
        "split": {"train": 0, "test": 60, "test_queries": 15},
        "hyperparameters": {},
        "metrics": {"before": before, "after": after},
        "gate": {"intervals": intervals},
        "training": {"steps": 1, "seconds": 1, "pairs_per_second": 60, "epoch_losses": [0.7]},
        "timings": {},
        "plots": [],
    }


def _version(before: dict, after: dict, intervals: dict) -> dict:
    return {
        "version": "v0002",
        "status": "champion",
        "metrics": {"before": before, "after": after},
        "gate": {"intervals": intervals},
        "snapshot": {"pairs": 60},
        "created_at": datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
    }


def _everything() -> tuple[dict, dict, dict, str, str]:
    """What a job stores and shows, from the same scores: metrics, evidence, report, versions table."""
    before, after = compute_metrics(LABELS, CHAMPION, QUERIES), compute_metrics(LABELS, CANDIDATE, QUERIES)
    decision = decide_promotion(PairedScores(LABELS, CHAMPION, CANDIDATE, QUERIES), RULE)
    intervals = decision.evidence["intervals"]
    report = render_report(_meta(before, after, intervals))
    table = cli.versions_header() + "\n" + cli.version_row(_version(before, after, intervals))
    return before, after, intervals, report, table


def test_a_registered_metric_is_stored_bootstrapped_reported_and_tabled(p_at_1):
    before, after, intervals, report, table = _everything()
    # Stored: each scored model's metrics carry it, computed by its per-query function.
    assert after["p@1"] == pytest.approx(1.0) and 0 <= before["p@1"] <= 1
    # Bootstrapped: the gate's evidence holds its interval beside ROC-AUC's, and the gate still decides on ROC-AUC.
    assert list(intervals) == ["roc_auc", "ndcg@10", "p@1"]
    assert intervals["p@1"]["delta"] == pytest.approx(after["p@1"] - before["p@1"])
    assert intervals["p@1"]["low"] <= intervals["p@1"]["delta"] <= intervals["p@1"]["high"]
    assert paired_bootstrap(LABELS, CHAMPION, CANDIDATE, QUERIES, samples=50, confidence=0.9, seed=1)["p@1"].samples
    # Reported: a row of the metrics table and a line of the gate's evidence.
    row = re.search(r"^p@1\s+(\S+)\s+(\S+)\s+(\S+)$", report, re.M)
    assert row and float(row.group(2)) == pytest.approx(after["p@1"], abs=1e-4)
    assert re.search(r"^  p@1\s+[+-]\d\.\d{4}  95% CI \[", report, re.M)
    # Tabled: a column of `eduranker versions`, its value under its header.
    header, line = table.splitlines()
    assert header.split()[-3:] == ["p@1", "pairs", "created"]
    assert line.split()[-4] == f"{after['p@1']:.3f}"


def test_without_the_entry_nothing_shows_it():
    before, _, intervals, report, table = _everything()
    assert "p@1" not in before and "p@1" not in intervals
    assert "p@1" not in report and "p@1" not in table


def test_the_table_holds_the_stored_names_in_order_and_the_gate_decides_on_roc_auc():
    assert METRICS.names == ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "ndcg@10", "mrr")
    assert METRICS.primary.name == "roc_auc"
    assert [m.name for m in METRICS.bootstrapped] == ["roc_auc", "ndcg@10"]
    assert [m.name for m in METRICS.columns] == ["f1", "ndcg@10"]


def test_the_registry_refuses_a_second_entry_of_a_name_and_losing_its_primary():
    registry = MetricRegistry(METRICS, primary="roc_auc")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(METRICS["mrr"])
    with pytest.raises(ValueError, match="stored beside"):
        registry.register(Metric("n", "pairs", lambda scored: 0.0))
    with pytest.raises(ValueError, match="the gate's metric"):
        registry.unregister("roc_auc")
    with pytest.raises(ValueError, match="needs a resampled change"):
        MetricRegistry(METRICS, primary="mrr")  # no interval: the gate could not decide on it


def test_a_lower_is_better_metric_is_marked_in_the_report():
    brier = Metric("brier", "Brier score", lambda s: float(((s.scores - s.labels) ** 2).mean()), higher_is_better=False)
    METRICS.register(brier)
    try:
        before, after = compute_metrics(LABELS, CHAMPION, QUERIES), compute_metrics(LABELS, CANDIDATE, QUERIES)
        row = re.search(
            r"^brier \(lower is better\)\s+(\S+)\s+(\S+)\s+(\S+)$", render_report(_meta(before, after, {})), re.M
        )
    finally:
        METRICS.unregister("brier")
    assert row and float(row.group(2)) == pytest.approx(after["brier"], abs=1e-4) and after["brier"] < before["brier"]
