"""Housekeeping duties: each failure contained, counted and reported; and the settings that refuse a
MongoDB URL weakening the trainer's write and read concerns."""

from datetime import UTC, datetime

import pytest

from eduranker.settings import Settings, SettingsError
from producer.duties import Duties, describe_failures

AT = datetime(2026, 1, 1, tzinfo=UTC)


class Stop(Exception):
    pass


def test_a_failing_duty_is_counted_and_kept_while_the_next_duty_still_runs():
    ran = []
    duties = Duties()
    duties.add("broken", 0, lambda at: 1 / 0)
    duties.add("fine", 0, lambda at: ran.append(at))
    failed = duties.run_due(AT)
    assert [d.name for d in failed] == ["broken"] and ran == [AT]
    duties.run_due(AT)
    broken = duties.get("broken")
    assert (broken.runs, broken.failures, broken.failures_total) == (2, 2, 2)
    assert broken.last_error == "ZeroDivisionError: division by zero" and broken.last_failed_at == AT
    assert duties.get("fine").last_ok_at == AT and duties.get("fine").failures == 0


def test_a_duty_that_works_again_clears_its_error_but_keeps_its_total():
    calls = iter([ValueError("volume gone"), None])

    def flaky(_at):
        outcome = next(calls)
        if outcome is not None:
            raise outcome

    duties = Duties()
    duties.add("reconcile", 0, flaky)
    duties.run_due(AT)
    assert duties.failing()[0].last_error == "ValueError: volume gone"
    duties.run_due(AT)
    entry = duties.report()["reconcile"]
    assert (entry["failures"], entry["failures_total"], entry["last_error"]) == (0, 1, None)
    assert duties.failing() == []


def test_the_loops_own_end_is_not_contained():
    duties = Duties(stop_on=(Stop,))
    duties.add("lease", 0, lambda at: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        duties.run_due(AT)


@pytest.mark.parametrize(
    ("lease_lost_after", "ran"),
    [(None, ["requeue", "online", "retention"]), (0, []), (1, ["requeue"]), (2, ["requeue", "online"])],
)
def test_no_duty_starts_once_the_lease_is_lost(lease_lost_after, ran):
    """The lease is checked (and renewed) before each duty: a long duty that outlived the lease is the
    last one to run; the loop ends there."""
    done: list[str] = []
    checks = {"n": 0}

    def leading():
        if lease_lost_after is not None and checks["n"] >= lease_lost_after:
            raise Stop()
        checks["n"] += 1

    duties = Duties(stop_on=(Stop,), before_each=leading)
    for name in ("requeue", "online", "retention"):
        duties.add(name, 0, lambda at, name=name: done.append(name))
    if lease_lost_after is None:
        duties.run_due(AT)
    else:
        with pytest.raises(Stop):
            duties.run_due(AT)
    assert done == ran


def test_each_duty_runs_on_its_own_interval():
    counts = {"often": 0, "rarely": 0}
    duties = Duties()
    duties.add("often", 0, lambda at: counts.__setitem__("often", counts["often"] + 1))
    duties.add("rarely", 3600, lambda at: counts.__setitem__("rarely", counts["rarely"] + 1))
    for _ in range(3):
        duties.run_due(AT)
    assert counts == {"often": 3, "rarely": 1}


def test_a_duty_name_is_added_once():
    duties = Duties()
    duties.add("requeue", 1, lambda at: None)
    with pytest.raises(ValueError, match="already added"):
        duties.add("requeue", 1, lambda at: None)


def test_status_lines_name_only_the_failing_duties_with_their_error():
    duties = Duties()
    duties.add("online", 0, lambda at: (_ for _ in ()).throw(LookupError("unknown model version: 'v0009'")))
    duties.add("requeue", 0, lambda at: None)
    duties.run_due(AT)
    lines = describe_failures(duties.report())
    assert len(lines) == 1
    assert lines[0].startswith("online: FAILING (1 in a row, 1 in all; last ok never)")
    assert "unknown model version: 'v0009'" in lines[0]
    assert describe_failures(None) == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("w=1", "w=1"),
        ("w=0", "w=0"),
        ("journal=false", "journal=false"),
        ("readConcernLevel=local", "readConcernLevel=local"),
        ("readconcernlevel=available", "readConcernLevel=available"),
    ],
)
def test_a_url_that_weakens_majority_writes_or_reads_is_refused_naming_it(query, named):
    with pytest.raises(SettingsError) as refused:
        Settings(mongodb_url=f"mongodb://db.example:27017/?replicaSet=rs0&{query}")
    message = str(refused.value)
    assert message.startswith("MONGODB_URL=") and named in message and "\n" not in message


@pytest.mark.parametrize("query", ["", "?w=majority", "?w=majority&journal=true", "?readConcernLevel=majority"])
def test_a_url_asking_for_majority_or_nothing_is_accepted(query):
    assert Settings(mongodb_url=f"mongodb://db.example:27017/{query}").mongodb_url.endswith(query)


def test_the_hand_back_cap_must_allow_one():
    with pytest.raises(SettingsError, match="JOB_MAX_HANDBACKS"):
        Settings(job_max_handbacks=0)
