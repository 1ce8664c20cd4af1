import pytest

from worker.gate import decide_promotion


@pytest.mark.parametrize(
    "before,after,min_improvement,promote",
    [
        (0.70, 0.80, 0.005, True),
        (0.70, 0.704, 0.005, False),  # better, but not by enough
        (0.70, 0.705, 0.005, True),  # exactly the margin
        (0.80, 0.70, 0.005, False),  # worse
        (0.80, 0.80, 0.0, False),  # equal is not better, even with no margin
        (0.80, 0.8001, 0.0, True),
        (None, 0.60, 0.005, True),  # champion undefined on these pairs
        (0.60, None, 0.005, False),  # candidate undefined: never promote
    ],
)
def test_gate_table(before, after, min_improvement, promote):
    decision = decide_promotion({"roc_auc": before}, {"roc_auc": after}, min_improvement)
    assert decision.promote is promote
    assert "roc_auc" in decision.reason


@pytest.mark.parametrize(
    "champion_ref,candidate_ref,promote",
    [
        (0.90, 0.89, True),  # within the tolerated regression
        (0.90, 0.88, True),  # exactly the tolerance
        (0.90, 0.87, False),
        (0.90, 0.10, False),  # learned the opposite: swapped labels
        (0.90, None, False),
        (None, 0.10, True),  # no reference metric for the champion: only the new pairs decide
    ],
)
def test_gate_refuses_a_candidate_that_regresses_on_the_champions_pairs(champion_ref, candidate_ref, promote):
    decision = decide_promotion(
        {"roc_auc": 0.70},
        {"roc_auc": 0.95},
        0.005,
        reference=({"roc_auc": champion_ref}, {"roc_auc": candidate_ref}),
    )
    assert decision.promote is promote
    assert ("champion's held-out pairs" in decision.reason) is not promote
