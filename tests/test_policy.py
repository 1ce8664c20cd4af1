from datetime import UTC, datetime, timedelta

import pytest

from eduranker.settings import Settings
from producer.policy import Decision, FailedChain, FeedbackCounts, JobHistory, Thresholds, decide, worth_counting

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# From the settings, as the producer builds it: a new threshold comes with its default, no edit here.
TH = Settings(train_min_feedback=50, train_min_minority=0.2, train_new_feedback=100, train_cooldown_seconds=600,
              auto_retry_limit=3).config(Thresholds)  # fmt: skip
WM = NOW - timedelta(hours=2)


def ago(seconds):
    return NOW - timedelta(seconds=seconds)


def after_model(age_s=3600, **kw):
    """A model exists (a job settled with watermark WM); the newest job was created `age_s` ago."""
    return JobHistory(last_created_at=ago(age_s), window_since=WM, **kw)


def failed(failures, failed_s_ago, window=None, age_s=None):
    chain = FailedChain("auto-x", WM, failures, ago(failed_s_ago))
    created = ago(age_s if age_s is not None else failed_s_ago + 60)
    return JobHistory(last_created_at=created, window_since=window, failed=chain)


@pytest.mark.parametrize(
    "likes,dislikes,history,train,reason",
    [
        # First model: total, both classes, balance.
        (30, 19, JobHistory(), False, "first model at 50 feedbacks: 49/50 feedbacks, minority 0.39"),
        (30, 20, JobHistory(), True, "first model: 50/50 feedbacks"),
        (50, 0, JobHistory(), False, "only one class"),
        (45, 9, JobHistory(), False, "minority 0.17 < 0.2"),
        (40, 10, JobHistory(), True, "minority 0.20"),
        # Retrain: new feedback since the window's watermark; balance gates only the first model.
        (50, 49, after_model(), False, "retrain at 100 new feedbacks: 99/100"),
        (50, 50, after_model(), True, "retrain: 100/100 new feedbacks"),
        (0, 100, after_model(), True, "retrain"),
        # Cooldown from the newest job of any kind, and one active job whoever recorded it.
        (450, 450, after_model(age_s=599), False, "waiting: cooldown until 2026-06-01 12:00:01 UTC"),
        (450, 450, after_model(age_s=600), True, "retrain"),
        (450, 450, after_model(active=("manual-1", "queued")), False, "job manual-1 is queued"),
        (450, 450, after_model(age_s=99999, active=("j", "running")), False, "job j is running"),
        # Manual jobs waiting behind a manual one: a due automatic job joins the queue behind them (it is
        # recorded waiting, never in front of them), cooldown or not, so manual jobs cannot starve it.
        (450, 450, after_model(age_s=10, waiting="m-2", active=("m-1", "running")), True, "retrain: 900/100"),
        (50, 49, after_model(waiting="m-2", active=("m-1", "running")), False, "retrain at 100 new feedbacks: 99/100"),
        (0, 0, JobHistory(waiting="m", failed=FailedChain("a", WM, 1, ago(9999))), True, "retry 1/3 of failed job a"),
        # Behind an automatic job manual ones go first; one automatic job waits at most.
        (
            450,
            450,
            after_model(waiting="m-2", active=("auto-1", "running"), active_automatic=True),
            False,
            "waiting: job auto-1 is running",
        ),
        (
            450,
            450,
            after_model(waiting="m-2", waiting_automatic="auto-2", active=("m-1", "running")),
            False,
            "waiting: automatic job auto-2 waits its turn",
        ),
        # While users judge a challenger, no automatic job starts (a newer candidate would restart the test).
        (450, 450, after_model(challenger="v0002"), False, "waiting: users are judging challenger v0002"),
        (0, 0, JobHistory(challenger="v0001", failed=FailedChain("a", WM, 1, ago(9999))), False, "challenger v0001"),
        # A failed automatic job is retried after the cooldown, doubling: 600, 1200, 2400 s.
        (0, 0, failed(1, 599), False, "retry 1/3 of failed job auto-x at 2026-06-01 12:00:01 UTC"),
        (0, 0, failed(1, 600), True, "retry 1/3 of failed job auto-x"),
        (0, 0, failed(2, 1199), False, "retry 2/3 of failed job auto-x at 2026-06-01 12:00:01 UTC"),
        (0, 0, failed(3, 2400), True, "retry 3/3"),
        # Retries spent: wait for new feedback after that trigger's watermark.
        (50, 49, failed(4, 99999, window=WM), False, "retrain at 100 new feedbacks: 99/100"),
        (50, 50, failed(4, 99999, window=WM), True, "retrain: 100/100"),
        # A retry still waits for an active job and for the cooldown after the newest job.
        (0, 0, JobHistory(active=("m", "running"), failed=FailedChain("auto-x", WM, 1, ago(9999))), False, "running"),
        (0, 0, failed(1, 9999, age_s=10), False, "cooldown"),
    ],
)
def test_policy_table(likes, dislikes, history, train, reason):
    decision = decide(FeedbackCounts(likes, dislikes), history, TH, NOW)
    assert decision.train is train
    assert reason in decision.reason


@pytest.mark.parametrize(
    "history,reason,ends_s",
    [
        # The cooldown from a job created 10 s before NOW: 600 s.
        (after_model(age_s=10), "waiting: cooldown until 2026-06-01 12:09:50 UTC", 590),
        # A first retry waits the cooldown after the failure, a second twice that.
        (failed(1, 10, age_s=700), "waiting: retry 1/3 of failed job auto-x at 2026-06-01 12:09:50 UTC", 590),
        (failed(2, 10, age_s=700), "waiting: retry 2/3 of failed job auto-x at 2026-06-01 12:19:50 UTC", 1190),
        # A deadline between two seconds is stated as the next whole second: nothing starts before it.
        (after_model(age_s=10.4), "waiting: cooldown until 2026-06-01 12:09:50 UTC", 589.6),
    ],
)
def test_a_wait_reads_the_same_every_second_until_it_ends(history, reason, ends_s):
    """A wait is stated by its end on the server's clock, not as a countdown: the producer's state and
    log change when the decision does, not every second of a cooldown."""
    ends = NOW + timedelta(seconds=ends_s)
    during = [decide(FeedbackCounts(450, 450), history, TH, NOW + timedelta(seconds=later))
              for later in [*range(0, int(ends_s)), ends_s - 0.001]]  # fmt: skip
    assert {d.reason for d in during} == {reason}
    assert all(not d.train and d.until == ends for d in during)
    assert decide(FeedbackCounts(450, 450), history, TH, ends).train


def test_a_retry_decision_names_the_chain_it_retries():
    decision: Decision = decide(FeedbackCounts(0, 0), failed(2, 99999), TH, NOW)
    assert decision.train and decision.retry_of is not None
    assert decision.retry_of.watermark == WM and decision.retry_of.failures == 2


@pytest.mark.parametrize(
    "last,events,history,worth",
    [
        # Never counted in this window: count.
        (None, 0, JobHistory(), True),
        (None, 0, after_model(), True),
        # Nothing happened since the count: nothing to read.
        (FeedbackCounts(10, 10), 0, JobHistory(), False),
        (FeedbackCounts(40, 40), 0, after_model(), False),
        # First model at 50: each event adds at most one feedback.
        (FeedbackCounts(20, 10), 19, JobHistory(), False),
        (FeedbackCounts(20, 10), 20, JobHistory(), True),
        # Enough feedback but one class short: any event may fix the balance.
        (FeedbackCounts(60, 0), 1, JobHistory(), True),
        # Retrain at 100 new feedbacks.
        (FeedbackCounts(50, 40), 9, after_model(), False),
        (FeedbackCounts(50, 40), 10, after_model(), True),
    ],
)
def test_counting_is_worth_it_only_when_the_events_since_could_cross_the_threshold(last, events, history, worth):
    assert worth_counting(last, events, history, TH) is worth


@pytest.mark.parametrize(
    "likes,dislikes,history", [(30, 19, JobHistory()), (50, 49, after_model()), (45, 9, JobHistory())]
)
def test_a_skipped_count_never_hides_a_crossing(likes, dislikes, history):
    """Whatever `events` new feedbacks arrive (any mix of labels), the policy says train only where
    `worth_counting` would have counted."""
    last = FeedbackCounts(likes, dislikes)
    for events in range(0, 120):
        for new_likes in {0, events // 2, events}:
            after = FeedbackCounts(likes + new_likes, dislikes + events - new_likes)
            if decide(after, history, TH, NOW).train:
                assert worth_counting(last, events, history, TH), (events, new_likes)
