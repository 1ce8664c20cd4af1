"""The trigger state and the stream's pacing: pure, table-tested (no database, no clock)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from eduranker.settings import Settings
from producer.policy import FeedbackCounts, JobHistory, Thresholds
from producer.stream import Pacing
from producer.trigger_state import Count, TriggerState, count_cap

# From the settings, as the producer builds it: a new threshold comes with its default, no edit here.
TH = Settings(train_min_feedback=50, train_min_minority=0.2, train_new_feedback=100, train_cooldown_seconds=600,
              auto_retry_limit=3).config(Thresholds)  # fmt: skip
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = JobHistory()  # no model yet: the whole collection is the window
RETRAIN = JobHistory(window_since=T0)


def count(likes, dislikes, *, window=T0, at=0.0, cap=None):
    return Count(window, FeedbackCounts(likes, dislikes), T0 + timedelta(hours=1), at, cap)


@pytest.mark.parametrize(
    "history,fresh,cap",
    [
        (FIRST, False, None),  # a first model's minority share needs the true split
        (FIRST, True, None),
        (RETRAIN, False, 100),  # "at least new_feedback?" needs no more than new_feedback
        (RETRAIN, True, None),  # the count a job is recorded with: its true split
    ],
)
def test_only_a_retrains_decision_count_is_capped(history, fresh, cap):
    assert count_cap(history, TH, fresh=fresh) == cap


@pytest.mark.parametrize(
    "counted,state",
    [
        (count(30, 20), {"counts": {"like": 30, "dislike": 20}, "counted_at_least": None}),
        (
            count(60, 39, cap=100),
            {"counts": {"like": 60, "dislike": 39}, "counted_at_least": None},
        ),  # below the cap: all was counted
        # At the cap the counting stopped after the likes: the split is not the window's, the total is.
        (count(100, 0, cap=100), {"counts": None, "counted_at_least": 100}),
        (count(70, 30, cap=100), {"counts": None, "counted_at_least": 100}),
    ],
)
def test_a_capped_count_is_stored_as_a_total_never_as_a_split(counted, state):
    assert counted.as_state() == state
    assert counted.exact is (state["counts"] is not None)


def _state(last=None, uncounted=0):
    state = TriggerState(TH, idle_eval_s=5.0, recount_s=60.0)
    state.last, state.uncounted_events = last, uncounted
    return state


@pytest.mark.parametrize(
    "last,uncounted,history,at,fresh,expected",
    [
        (None, 0, RETRAIN, 0.0, False, True),  # never counted
        (count(10, 10, window=None), 0, RETRAIN, 1.0, False, True),  # counted another window
        (count(40, 40), 0, RETRAIN, 1.0, True, True),  # before an enqueue: always
        (count(40, 40), 0, RETRAIN, 1.0, False, False),  # nothing happened
        (count(40, 40), 19, RETRAIN, 1.0, False, False),  # 80 + 19 events cannot reach 100
        (count(40, 40), 20, RETRAIN, 1.0, False, True),  # 80 + 20 may
        (count(40, 40), 1, RETRAIN, 5.0, False, True),  # events pending for an idle interval: progress
        (count(40, 40), 0, RETRAIN, 60.0, False, True),  # overdue: a restored collection sends no events
        (replace(count(40, 40), after_events=True), 0, RETRAIN, 1.0, False, False),
        # An idle interval after a count events caused, once: feedback dated past that count's end
        (replace(count(40, 40), after_events=True), 0, RETRAIN, 5.0, False, True),
        (count(10, 10, window=None), 29, FIRST, 1.0, False, False),  # 20 + 29 < 50
        (count(10, 10, window=None), 30, FIRST, 1.0, False, True),
    ],
)
def test_the_window_is_counted_again_only_when_the_answer_could_change(last, uncounted, history, at, fresh, expected):
    assert _state(last, uncounted).must_count(history, at, fresh=fresh) is expected


def test_a_count_clears_the_events_and_forget_trusts_none_from_before():
    state = _state()
    state.saw(7)
    state.saw(5)
    assert state.uncounted_events == 12
    recorded = state.counted(count(1, 2))
    assert state.uncounted_events == 0 and state.last_for(RETRAIN) is recorded
    assert state.last_for(FIRST) is None  # another window's count is no count of this one
    state.forget()
    assert state.last_for(RETRAIN) is None


@pytest.mark.parametrize(
    "pending,last_eval,gap,at,wait_s,due",
    [
        (0, 0.0, 0.25, 1.0, 0.0, False),  # idle: the drain itself waits, evaluation at the idle tick
        (0, 0.0, 0.25, 5.0, 0.0, True),  # the idle tick
        (3, 0.0, 0.25, 0.1, 0.15, False),  # events pile up until the gap has passed
        (3, 0.0, 0.25, 0.25, 0.0, True),
        (3, 0.0, 2.0, 1.0, 1.0, False),  # a gap stretched by slow counting
    ],
)
def test_an_evaluation_is_due_after_the_gap_with_events_or_at_the_idle_tick(pending, last_eval, gap, at, wait_s, due):
    pacing = Pacing(max_batch_s=0.25, idle_eval_s=5.0, last_eval=last_eval, pending=pending, gap=gap)
    assert pacing.wait_s(at) == pytest.approx(wait_s)
    assert pacing.due(at) is due


@pytest.mark.parametrize("read_s,gap", [(0.01, 0.25), (0.5, 2.0)])
def test_slow_counting_stretches_the_gap_to_keep_reads_a_fifth_of_the_time(read_s, gap):
    pacing = Pacing(max_batch_s=0.25, idle_eval_s=5.0, last_eval=0.0, pending=4)
    pacing.evaluated(10.0, read_s)
    assert (pacing.pending, pacing.last_eval, pacing.gap) == (0, 10.0, gap)
