"""The training report and plots a person opens first, from real metrics of synthetic scores."""

import re

import numpy as np
import pytest

from eduranker.pipeline.evaluation import compute_metrics
from eduranker.pipeline.report import PLOTS, render_report, write_plots

RNG = np.random.default_rng(5)
LABELS = [1.0, 0.0] * 20
QUERIES = [f"q{i // 4}" for i in range(40)]
BEFORE = RNG.uniform(size=40)
AFTER = np.clip(np.asarray(LABELS) * 0.5 + RNG.uniform(size=40) * 0.5, 0, 1)


def _meta(intervals):
    before, after = compute_metrics(LABELS, BEFORE, QUERIES), compute_metrics(LABELS, AFTER, QUERIES)
    return {
        "version": "v0007",
        "job_id": "job-1",
        "base_model": "tiny",
        "compared_against": "v0006",
        "device": "cpu",
        "promoted": False,
        "gate_reason": "ΔROC-AUC interval reaches below the minimum",
        "snapshot": {
            "rows_seen": 50,
            "pairs": 40,
            "label_counts": {"like": 20, "dislike": 20},
            "skipped_total": 10,
            "skipped": {"missing_query": 4, "empty_document": 6},
            "duplicates_superseded": 2,
            "texts_truncated": 1,
        },
        "split": {"train": 30, "test": 10, "test_queries": 3},
        "hyperparameters": {"num_epochs": 1, "precision": "bf16"},
        "metrics": {"before": before, "after": after},
        "gate": {"intervals": intervals},
        "training": {"steps": 4, "seconds": 1.5, "pairs_per_second": 80.0, "epoch_losses": [0.69]},
        "timings": {"train": 1.5},
        "plots": list(PLOTS),
    }


def test_the_report_shows_each_metric_before_after_and_their_difference():
    meta = _meta({"roc_auc": {"delta": 0.31, "low": 0.12, "high": 0.5, "confidence": 0.95, "samples": 1000}})
    text = render_report(meta)
    before, after = meta["metrics"]["before"]["roc_auc"], meta["metrics"]["after"]["roc_auc"]
    row = re.search(r"^roc_auc\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
    assert row and [float(x) for x in row.groups()] == pytest.approx([before, after, after - before], abs=1e-4)
    assert "not promoted — ΔROC-AUC interval reaches below the minimum" in text
    assert "skipped 10: missing_query=4, empty_document=6" in text
    assert "95% CI [+0.1200, +0.5000] over 1000 resamples" in text
    assert "precision=bf16" in text


def test_a_version_from_before_shows_the_intervals_it_kept_in_its_metrics():
    meta = _meta({})
    meta["metrics"]["intervals"] = {"roc_auc": {"delta": 0.2, "low": 0.1, "high": 0.3, "confidence": 0.95}}
    assert re.search(r"^  roc_auc\s+\+0\.2000  95% CI \[\+0\.1000, \+0\.3000\]", render_report(meta), re.M)


def test_the_champions_frozen_pairs_are_shown_from_the_gate_evidence():
    meta = _meta({})
    meta["gate"]["reference"] = {"pairs": 80, "queries": 12, "delta": -0.05, "low": -0.09, "high": -0.03}
    assert "on the champion's frozen pairs (80 pairs): -0.0500 [-0.0900, -0.0300]" in render_report(meta)


def test_an_undefined_interval_and_a_missing_metric_are_said_not_invented():
    meta = _meta({"ndcg@10": {"delta": None, "low": None, "high": None}})
    meta["metrics"]["before"]["roc_auc"] = None  # e.g. a single-class held-out set
    text = render_report(meta)
    assert re.search(r"^  ndcg@10\s+undefined$", text, re.M)
    assert re.search(r"^roc_auc\s+n/a\s+\S+\s*$", text, re.M)


@pytest.mark.parametrize("labels", [LABELS, [1.0] * 40], ids=["both classes", "one class"])
def test_every_plot_is_written_as_an_image(tmp_path, labels):
    import matplotlib.image

    after = compute_metrics(labels, AFTER, QUERIES)
    names = write_plots(
        tmp_path,
        label_counts={"like": int(sum(labels)), "dislike": 40 - int(sum(labels))},
        query_lengths=[len(q) for q in QUERIES],
        before=compute_metrics(labels, BEFORE, QUERIES),
        after=after,
        test_labels=labels,
        scores_before=BEFORE,
        scores_after=AFTER,
    )
    assert names == list(PLOTS)
    for name in names:
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name
        assert image[..., :3].std() > 0.01, f"{name} is blank"


def test_the_report_says_what_was_judged_and_shows_each_judged_slice():
    meta = _meta({})
    meta["split"] |= {"epoch": 2, "test_fraction": 0.2}
    meta["gate"] = {
        "heldout_pairs": 240,
        "fairness": {"excluded_champion_trained": 17, "champion_may_have_seen": False},
        "slices": {
            "math": {"pairs": 120, "queries": 20, "delta": -0.21, "low": -0.33, "high": -0.08, "confidence": 0.975},
            "art": {"pairs": 120, "queries": 20, "delta": None, "low": None, "high": None, "confidence": 0.975},
        },
    }
    text = render_report(meta)
    assert "split epoch 2 (test fraction 0.2); judged on 240 held-out pairs, 17 left out" in text
    assert "may have seen" not in text
    assert re.search(r"^  math\s+-0\.2100  97\.5% CI \[-0\.3300, -0\.0800\] on 120 pairs / 20 queries$", text, re.M)
    assert re.search(r"^  art\s+undefined \(120 pairs\)$", text, re.M)
    meta["gate"]["fairness"]["champion_may_have_seen"] = True
    assert "the champion may have seen some judged pairs" in render_report(meta)
