from datetime import UTC, datetime, timedelta

import pytest

from producer.policy import FeedbackCounts, LastJob, Thresholds, decide

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TH = Thresholds(min_feedback=50, min_minority=0.2, new_feedback=100, cooldown_seconds=600)
WM = NOW - timedelta(hours=2)


def job(status="succeeded", age_s=3600, watermark=WM):
    return LastJob("j", status, NOW - timedelta(seconds=age_s), watermark)


@pytest.mark.parametrize(
    "likes,dislikes,last,train,reason",
    [
        (30, 19, None, False, "not yet: 49/50 feedbacks, minority 0.39"),
        (30, 20, None, True, "first model: 50/50 feedbacks"),
        (50, 0, None, False, "only one class"),
        (45, 9, None, False, "minority 0.17 < 0.2"),
        (40, 10, None, True, "minority 0.20"),
        (50, 49, job(), False, "not yet: 99/100 new feedbacks since last job"),
        (50, 50, job(), True, "retrain: 100/100 new feedbacks"),
        (95, 5, job(), True, "retrain"),  # balance only gates the first model
        (0, 100, job(), True, "retrain"),
        (450, 450, job(age_s=599), False, "cooldown, 1 s left"),
        (450, 450, job(age_s=600), True, "retrain"),
        (450, 450, job(status="queued"), False, "job j is queued"),
        (450, 450, job(status="running", age_s=99999), False, "job j is running"),
        (60, 40, job(status="failed", watermark=None), True, "first model"),  # no snapshot yet
        (60, 40, job(status="failed", age_s=10, watermark=None), False, "cooldown"),
    ],
)
def test_policy_table(likes, dislikes, last, train, reason):
    decision = decide(FeedbackCounts(likes, dislikes), last, TH, NOW)
    assert decision.train is train
    assert reason in decision.reason
