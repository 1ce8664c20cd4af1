"""The closed loop's world and its simulated users (`bench/closed_loop.py`).

The corpus (`bench/packages_corpus.py`): a package's summary is the query, its long description the
relevant document, same-section packages the hard negatives among its candidates. Served queries are
what users search for; test queries are never served (true quality is measured on them). Users are
position-based: rank r is examined with probability (1/r)^eta, an examined relevant result is liked
(95%), half of the examined non-relevant ones are disliked, 2% of reactions are flipped. An optional
exploration share swaps one random adjacent pair among the top results before they are shown.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import packages_corpus

from eduranker.serving import ChampionReranker
from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES


@dataclass
class World:
    corpus: packages_corpus.Corpus
    served: list[str]  # query package names users search for
    test: list[str]  # never served: true quality is measured on these
    text: dict[str, str] = field(default_factory=dict)  # package → document text
    summary: dict[str, str] = field(default_factory=dict)
    resource_id: dict[str, Any] = field(default_factory=dict)
    searched: set[str] = field(default_factory=set)  # served queries searched at least once
    relevant_judged: set[str] = field(default_factory=set)  # … whose relevant document got a reaction


def make_world(
    seed: int, candidates: int, test_queries: int, packages: list[packages_corpus.Package] | None = None
) -> World:
    """`packages`: the corpus's packages (default: the shipped English one)."""
    corpus = packages_corpus.build(packages, per_query=candidates, hard=(candidates * 3) // 5, seed=seed)
    names = [p.name for p in corpus.packages]
    rng = random.Random(seed)
    rng.shuffle(names)
    world = World(corpus, sorted(names[test_queries:]), sorted(names[:test_queries]))
    for p in corpus.packages:
        title, description = packages_corpus.document(p)
        world.text[p.name] = f"{title}\n\n{description}"
        world.summary[p.name] = p.summary
    return world


def insert_resources(db: Any, world: World) -> None:
    for p in world.corpus.packages:
        title, description = packages_corpus.document(p)
        doc = {"title": title, "description": description, "subject": p.section}
        world.resource_id[p.name] = db[RESOURCES].insert_one(doc).inserted_id


def explore(order: list[int], rng: random.Random, share: float, top: int = 5) -> list[int]:
    """With probability `share`, swap one random adjacent pair among the top results."""
    order = list(order)
    if share > 0 and rng.random() < share and len(order) >= 2:
        i = rng.randrange(min(top, len(order)) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    return order


def user_reaction(relevant: bool, rank: int, rng: random.Random, eta: float) -> str | None:
    """A position-based user: examines rank r with probability (1/r)^eta."""
    if rng.random() >= (1.0 / rank) ** eta:
        return None
    reacts = rng.random() < (0.95 if relevant else 0.5)  # like the relevant one; dislike half of the rest
    value = None if not reacts else "like" if relevant else "dislike"
    if value is not None and rng.random() < 0.02:
        value = "dislike" if value == "like" else "like"
    return value


def relevant_ndcg(shown: list[str], name: str) -> float:
    """True NDCG@10 of one shown list: its one relevant document's position (0 past the tenth)."""
    rank = shown.index(name) + 1 if name in shown else 0
    return 1.0 / math.log2(rank + 1) if 0 < rank <= 10 else 0.0


@dataclass
class Served:
    reactions: int = 0
    ranks: list[int] = field(default_factory=list)  # ranks of the reactions
    shown_ndcg: list[float] = field(default_factory=list)  # true NDCG@10 of each list shown
    alone_ndcg: list[float] = field(default_factory=list)  # … of the champion's own list for the same search
    was_interleaved: list[bool] = field(default_factory=list)  # aligned with shown_ndcg


def serve_round(
    db: Any,
    world: World,
    reranker: ChampionReranker,
    args: argparse.Namespace,
    rng: random.Random,
    searches: int | None = None,
    champion_alone: ChampionReranker | None = None,
) -> Served:
    """`searches` searches, each a user_queries document and its inferences written as the docs tell a
    search API to (`result.inference_fields()`, aligned with `result.order`); then reactions. With
    `champion_alone`, each interleaved list's truth is measured beside the champion's own list."""
    out = Served()
    now = datetime.now(UTC)
    for _ in range(args.searches if searches is None else searches):
        name = rng.choice(world.served)
        world.searched.add(name)
        user = f"user-{rng.randrange(500)}"
        candidates = world.corpus.candidates[name]
        texts = [world.text[c] for c in candidates]
        result = reranker.rerank(world.summary[name], texts, key=user)
        fields = result.inference_fields()
        order = explore(result.order, rng, args.explore)
        by_doc = dict(zip(result.order, fields, strict=True))
        shown = [candidates[i] for i in order]
        out.shown_ndcg.append(relevant_ndcg(shown, name))
        out.was_interleaved.append(result.interleaved)
        if result.interleaved and champion_alone is not None:
            alone = champion_alone.rerank(world.summary[name], texts, key=user).order
            out.alone_ndcg.append(relevant_ndcg([candidates[i] for i in alone], name))
        qid = db[USER_QUERIES].insert_one({"query_text": world.summary[name], "user_id": user}).inserted_id
        docs = [
            {"query_id": qid, "resource_id": world.resource_id[candidates[i]], **by_doc[i], "rank": rank,
             "created_at": now}
            for rank, i in enumerate(order, start=1)
        ]  # fmt: skip
        ids = db[INFERENCES].insert_many(docs).inserted_ids
        for rank, (inference_id, i) in enumerate(zip(ids, order, strict=True), start=1):
            value = user_reaction(candidates[i] == name, rank, rng, args.eta)
            if value is not None:
                db[INFERENCES].update_one({"_id": inference_id}, {"$set": {"feedback": value, "feedback_at": now}})
                out.reactions += 1
                out.ranks.append(rank)
                if candidates[i] == name:
                    world.relevant_judged.add(name)
    return out
