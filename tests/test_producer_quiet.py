# ruff: noqa: F811 - the fixtures imported from tests/test_producer.py are used as arguments
"""Cheap over months: the producer writes `producer_state` and logs when its decision changes, and
otherwise only as often as the state's readers need (`producer/state_writer.py`). The pure rules on a
simulated clock, then a real producer on SecantusDB over a simulated minute of cooldown."""

import logging
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import monitoring

from console import cli
from eduranker.queue import make_celery
from eduranker.store import connect, jobs
from eduranker.store.clock import server_now
from producer.duties import Duties
from producer.housekeeping import DutiesReport
from producer.policy import Decision, FeedbackCounts, JobHistory, Thresholds, decide
from producer.state import load_state
from producer.state_writer import EVENTS_WRITE_S, LIVENESS_WRITE_S, StateWrites
from producer.trigger import in_words
from producer.trigger_state import Count
from producer.watcher import Producer
from tests.test_producer import psettings, queue  # noqa: F401 - fixtures

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TH = Thresholds(min_feedback=50, min_minority=0.2, new_feedback=100, cooldown_seconds=600, retry_limit=3)
TICK = 0.25  # the evaluations' pace while events arrive (Producer's max_batch_s)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def quiet_minutes(writes: StateWrites, clock: Clock, history: JobHistory, seconds: float, events_every=None):
    """Evaluate every TICK for `seconds` of a simulated clock (server and monotonic alike); returns the
    writes that were due. `events_every`: one change event each that many seconds."""
    due, next_event = 0, events_every
    for k in range(1, int(seconds / TICK) + 1):
        clock.t += TICK
        events = 0
        if next_event is not None and k * TICK >= next_event:
            events, next_event = 1, next_event + events_every
        decision = decide(FeedbackCounts(450, 450), history, TH, NOW + timedelta(seconds=k * TICK))
        if writes.due(decision, None, events):
            writes.written(decision, None)
            due += 1
    return due


def test_a_cooldown_costs_one_write_and_one_log_line_then_a_write_per_liveness_interval(caplog):
    clock = Clock()
    writes = StateWrites(clock=clock)
    cooling = JobHistory(last_created_at=NOW, window_since=NOW - timedelta(hours=1))  # 600 s from NOW
    with caplog.at_level(logging.INFO, logger="producer.state_writer"):
        due = quiet_minutes(writes, clock, cooling, 590)
    assert due == 1 + int((590 - TICK) // LIVENESS_WRITE_S)  # 40 in ten minutes, not one a second
    assert [r.getMessage() for r in caplog.records] == ["waiting: cooldown until 2026-06-01 12:10:00 UTC"]


def test_events_during_a_cooldown_save_their_position_at_most_every_few_seconds():
    clock = Clock()
    writes = StateWrites(clock=clock)
    cooling = JobHistory(last_created_at=NOW, window_since=NOW - timedelta(hours=1))
    due = quiet_minutes(writes, clock, cooling, 60, events_every=1.0)  # feedback each second
    assert due == 1 + int((60 - TICK) // EVENTS_WRITE_S)  # 12 a minute, not 60


def test_a_changed_decision_or_count_is_written_at_once_and_an_unchanged_one_waits():
    clock = Clock()
    writes = StateWrites(clock=clock)
    waiting = Decision(False, "retrain at 100 new feedbacks: 10/100 new feedbacks")
    count = Count(NOW, FeedbackCounts(6, 4), NOW, clock())
    assert writes.due(waiting, count)  # the first evaluation
    writes.written(waiting, count)
    clock.t += TICK
    assert not writes.due(waiting, count)
    flipped = Count(NOW, FeedbackCounts(5, 5), NOW, clock())  # a like became a dislike: same reason
    assert writes.due(waiting, flipped)
    writes.written(waiting, flipped)
    clock.t += TICK
    assert writes.due(Decision(False, "waiting: job auto-1 is queued"), None)
    writes.written(Decision(False, "waiting: job auto-1 is queued"), None)
    clock.t += LIVENESS_WRITE_S - TICK
    assert not writes.due(Decision(False, "waiting: job auto-1 is queued"), None)
    clock.t += TICK
    assert writes.due(Decision(False, "waiting: job auto-1 is queued"), None)  # the liveness write
    writes.written(Decision(False, "waiting: job auto-1 is queued"), None)
    writes.forget()  # leading again: another producer may have written meanwhile
    assert writes.due(Decision(False, "waiting: job auto-1 is queued"), None)


def test_status_shows_what_is_left_of_a_wait_from_its_end():
    ends = NOW + timedelta(seconds=45)
    wait = Decision(False, "waiting: cooldown until 2026-06-01 12:00:45 UTC", until=ends)
    assert in_words(wait, NOW) == "waiting: cooldown until 2026-06-01 12:00:45 UTC (45 s left)"
    assert in_words(wait, ends + timedelta(seconds=3)).endswith("(0 s left)")
    assert in_words(Decision(False, "waiting: job j is queued"), NOW) == "waiting: job j is queued"


class StateWritesSeen(monitoring.CommandListener):
    """The updates a client sends to `producer_state`, by document id."""

    def __init__(self) -> None:
        self.ids: list[object] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update" and event.command.get("update") == "producer_state":
            self.ids += [u["q"].get("_id") for u in event.command.get("updates", [])]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _cooling_producer(db, psettings, seen):
    """A leading producer whose state is written on a simulated monotonic clock, just after a job."""
    os.makedirs(psettings.models_dir, exist_ok=True)
    s = psettings.with_overrides(train_cooldown_seconds=3600)
    at = server_now(db)
    jobs.create_job(db, "auto-done", trigger={"reason": "t", "source": "producer", "watermark": at}, automatic=True)
    claimed = jobs.claim_job(db, "auto-done", worker="stand-in", stale_after_s=60)
    jobs.finish_job(db, "auto-done", claimed["attempts"], jobs.SUCCEEDED, snapshot={"watermark": at})
    producer = Producer(s, connect(s, listeners=[seen]), make_celery(s), holder="quiet")
    assert producer.lease.acquire()
    clock = Clock()
    producer.state_writes.clock = clock
    return producer, clock, server_now(db)


@pytest.mark.integration
def test_a_real_producer_writes_its_state_a_handful_of_times_in_a_minute_of_cooldown(db, psettings, queue):
    """A simulated minute of evaluations every 0.25 s (the server's now passed in, the state's clock
    moved by hand), with and without feedback arriving: the `producer` document is written when the
    decision is first made, then at the liveness or the events' interval; never once a second."""
    seen = StateWritesSeen()
    producer, clock, start = _cooling_producer(db, psettings, seen)
    reasons = set()
    for k in range(int(60 / TICK)):
        clock.t += TICK
        reasons.add(producer.evaluate(now=start + timedelta(seconds=k * TICK)).reason)
    assert producer.duties.failing() == [], producer.duties.report()
    assert seen.ids.count("producer") == 1 + int((60 - TICK) // LIVENESS_WRITE_S), seen.ids  # 4 a minute
    (first,) = reasons
    assert first.startswith("waiting: cooldown until "), first

    seen.ids.clear()
    token = {"_data": "8200000001000000012B0229296E04"}
    for k in range(int(60 / TICK)):  # the next minute, a feedback event each second
        clock.t += TICK
        events = 1 if k % int(1 / TICK) == 0 else 0
        producer.evaluate(now=start + timedelta(seconds=60 + k * TICK), events=events, resume_token=token,
                          events_until=start + timedelta(seconds=60 + k * TICK))  # fmt: skip
    assert seen.ids.count("producer") <= 60 / EVENTS_WRITE_S, seen.ids  # 12 a minute, not 60
    state = load_state(db)
    assert state["last_decision"] == first and state["resume_token"] == token
    assert state["evaluations"] > 60 / TICK  # the counters ride along


@pytest.mark.integration
def test_status_shows_the_cooldowns_end_and_what_is_left_of_it(db, psettings, queue, capsys):
    seen = StateWritesSeen()
    _cooling_producer(db, psettings, seen)
    assert cli.main(["status"], psettings.with_overrides(train_cooldown_seconds=3600)) == 0
    out = capsys.readouterr().out
    found = re.search(r"now: waiting: cooldown until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+) s left\)", out)
    assert found, out
    assert 0 < int(found.group(1)) <= 3600


def test_the_duties_report_is_stored_at_once_when_a_duty_fails_or_works_again_and_not_on_other_passes():
    stored = []

    class Collection:
        def update_one(self, query, update, upsert=False):
            stored.append(update[0]["$set"]["duties"]["$literal"])

    outcomes = iter([ValueError("volume gone"), ValueError("volume gone"), None, None, None])

    def flaky(_at):
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    duties = Duties()
    duties.add("reconcile", 0, flaky)
    duties.add("requeue", 0, lambda _at: None)
    report = DutiesReport({"producer_state": Collection()}, duties)
    for _ in range(5):
        report.after_pass(duties.run_due(NOW))
    assert [entry["reconcile"]["failures"] for entry in stored] == [1, 2, 0]  # failed, failed, works again
