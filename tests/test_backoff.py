"""Backing off a failed watch while leading (producer/backoff.py): evaluations only while the lease is
held, none after one fails, none once stopped. No server: a stand-in leader."""

import threading

from producer.backoff import back_off_leading


class Lease:
    def __init__(self, held):
        self._held = held

    def held(self):
        return self._held


class Leader:
    def __init__(self, *, held=True, fails=False):
        self.stop_event, self.lease, self.fails, self.calls = threading.Event(), Lease(held), fails, 0

    def evaluate(self):
        self.calls += 1
        if self.fails:
            raise RuntimeError("database down too")


def test_a_leader_evaluates_while_it_backs_off():
    leader = Leader()
    assert back_off_leading(leader, 0.35, every_s=0.1) == leader.calls >= 1


def test_a_producer_that_does_not_hold_the_lease_only_waits():
    leader = Leader(held=False)
    assert back_off_leading(leader, 0.25, every_s=0.05) == 0 and leader.calls == 0


def test_evaluations_that_fail_go_on_while_the_lease_is_held():
    leader = Leader(fails=True)
    assert back_off_leading(leader, 1.0, every_s=0.02) == 0 and leader.calls >= 2


def test_a_stopped_producer_returns_at_once_without_evaluating():
    leader = Leader()
    leader.stop_event.set()
    assert back_off_leading(leader, 30.0, every_s=0.1) == 0 and leader.calls == 0
