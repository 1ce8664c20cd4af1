"""Team-draft interleaving: one list from two rankings, each document once, each team's order kept."""

import random

import pytest

from eduranker.serving.interleave import A, B, team_draft


def _check(first, second, order, teams):
    assert sorted(order) == sorted(first) and len(set(order)) == len(order)  # each document once
    for team, ranking in ((A, first), (B, second)):
        mine = [doc for doc, t in zip(order, teams, strict=True) if t == team]
        assert mine == sorted(mine, key=ranking.index)  # a team's documents keep its ranking's order
        for doc in mine:  # a team only ever picks its best document not yet taken
            position = order.index(doc)
            assert all(d in order[:position] for d in ranking[: ranking.index(doc)])
    for k in range(1, len(order) + 1):  # no ranking is favoured by position
        assert abs(teams[:k].count(A) - teams[:k].count(B)) <= 1


def test_random_rankings_interleave_into_each_document_once_in_both_orders():
    rng = random.Random(0)
    for n in (1, 2, 3, 5, 10, 31):
        for _ in range(50):
            first = rng.sample(range(n), n)
            second = rng.sample(range(n), n)
            order, teams = team_draft(first, second, rng)
            _check(first, second, order, teams)


def test_identical_rankings_give_that_ranking_and_both_teams_get_turns():
    rng = random.Random(1)
    seen = set()
    for _ in range(40):
        order, teams = team_draft([2, 0, 1, 3], [2, 0, 1, 3], rng)
        assert order == [2, 0, 1, 3]
        seen.add(teams[0])
    assert seen == {A, B}  # the coin decides who picks first


def test_rankings_of_different_documents_are_refused():
    with pytest.raises(ValueError, match="same documents"):
        team_draft([0, 1], [1, 2], random.Random(0))
