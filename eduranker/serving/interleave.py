"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): one list from two rankings.

Like two captains picking teams: the team with fewer picks so far (a coin decides a tie) adds its
highest-ranked document not yet in the list. Every document appears once, the documents each team
contributed keep that team's order, and at every prefix the teams differ by at most one document, so
neither ranking is favoured by position. A click (here: a like or dislike) on a document is credited
to the team that contributed it. Pure: no torch, no model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

A, B = 0, 1  # the two teams: the champion and the previous champion


def team_draft(first: Sequence[int], second: Sequence[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """Interleave two rankings (document indices, best first) of the same documents.

    Returns (order, teams): the interleaved indices and, aligned with them, which ranking contributed
    each one (A for `first`, B for `second`).
    """
    if sorted(first) != sorted(second):
        raise ValueError("team-draft interleaving needs two rankings of the same documents")
    rankings, cursor, picks = (first, second), [0, 0], [0, 0]
    order: list[int] = []
    teams: list[int] = []
    taken: set[int] = set()
    while len(order) < len(first):
        team = A if picks[A] < picks[B] or (picks[A] == picks[B] and rng.random() < 0.5) else B
        ranking = rankings[team]
        while ranking[cursor[team]] in taken:  # skip what the other team took already
            cursor[team] += 1
        doc = ranking[cursor[team]]
        taken.add(doc)
        order.append(doc)
        teams.append(team)
        picks[team] += 1
    return order, teams
