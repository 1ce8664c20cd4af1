from datetime import UTC, datetime, timedelta

import pytest

from producer.policy import FeedbackCounts, LastJob, Thresholds, decide

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TH = Thresholds(min_feedback=50, min_minority=0.2, new_feedback=100, cooldown_seconds=600)
WM = NOW - timedelta(hours=2)


def job(status="succeeded", age_s=3600, watermark=WM):
    return LastJob("j", status, NOW - timedelta(seconds=age_s), watermark)


@pytest.mark.parametrize(
    "likes,dislikes,new,last,train,reason",
    [
        (30, 19, 49, None, False, "not yet: 49/50 feedbacks, minority 0.39"),
        (30, 20, 50, None, True, "first model: 50/50 feedbacks"),
        (50, 0, 50, None, False, "only one class"),
        (45, 9, 54, None, False, "minority 0.17 < 0.2"),
        (40, 10, 50, None, True, "minority 0.20"),
        (500, 500, 99, job(), False, "not yet: 99/100 new feedbacks since last job"),
        (500, 500, 100, job(), True, "retrain: 100/100 new feedbacks"),
        (500, 10, 100, job(), True, "retrain"),  # balance only gates the first model
        (500, 500, 900, job(age_s=599), False, "cooldown, 1 s left"),
        (500, 500, 900, job(age_s=600), True, "retrain"),
        (500, 500, 900, job(status="queued"), False, "job j is queued"),
        (500, 500, 900, job(status="running", age_s=99999), False, "job j is running"),
        (60, 40, 100, job(status="failed", watermark=None), True, "first model"),  # no snapshot yet
        (60, 40, 100, job(status="failed", age_s=10, watermark=None), False, "cooldown"),
    ],
)
def test_policy_table(likes, dislikes, new, last, train, reason):
    decision = decide(FeedbackCounts(likes, dislikes, new), last, TH, NOW)
    assert decision.train is train
    assert reason in decision.reason
