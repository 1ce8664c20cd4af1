"""Small, realistic EduRanker data: educational queries, resources, served results and feedback.

Written the way the search API writes it: a query, the inferences it served, and later a feedback
update on some of them. Users like results on the query's subject and mostly dislike the rest.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bson import ObjectId

from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES
from eduranker.store.types import Db

# The demo's 48 queries are few, so a random split key holds out anywhere from 4 to 16 of them; this fixed
# key holds out 10 (60 pairs), enough for the first job's gate to judge. A deployment keeps a random key.
DEMO_SPLIT_KEY = hashlib.sha256(b"demo split key").hexdigest()

SUBJECTS: dict[str, dict[str, list[str]]] = {
    "biology": {
        "queries": [
            "how do plants make food",
            "what is photosynthesis",
            "parts of a plant cell",
            "how does dna replication work",
            "what do mitochondria do",
            "cell division for kids",
        ],
        "resources": [
            "Photosynthesis explained with diagrams",
            "Inside the plant cell: organelles",
            "DNA replication step by step",
            "Mitochondria: the powerhouse of the cell",
            "Mitosis and meiosis compared",
            "How leaves turn sunlight into sugar",
        ],
    },
    "algebra": {
        "queries": [
            "solve linear equations",
            "what is a quadratic formula",
            "factoring polynomials help",
            "how to graph y = mx + b",
            "systems of equations practice",
            "simplify algebraic fractions",
        ],
        "resources": [
            "Solving one-variable linear equations",
            "The quadratic formula and when to use it",
            "Factoring trinomials worksheet",
            "Slope-intercept form of a line",
            "Substitution and elimination methods",
            "Rational expressions made simple",
        ],
    },
    "history": {
        "queries": [
            "causes of world war one",
            "who built the pyramids",
            "french revolution summary",
            "roman empire fall reasons",
            "industrial revolution inventions",
            "cold war timeline",
        ],
        "resources": [
            "The assassination that started World War I",
            "Pyramid builders of ancient Egypt",
            "1789: the French Revolution in ten minutes",
            "Why Rome fell: five theories",
            "Steam engines and factories of the 1800s",
            "From Yalta to the Berlin Wall",
        ],
    },
    "chemistry": {
        "queries": [
            "balancing chemical equations",
            "what is the periodic table",
            "acids and bases ph",
            "covalent vs ionic bonds",
            "mole concept explained",
            "types of chemical reactions",
        ],
        "resources": [
            "Balancing equations with the atom-count method",
            "Reading the periodic table",
            "The pH scale: acids, bases and indicators",
            "Ionic and covalent bonding",
            "Avogadro's number and the mole",
            "Synthesis, decomposition and combustion",
        ],
    },
    "physics": {
        "queries": [
            "newton's laws of motion",
            "what is kinetic energy",
            "how do circuits work",
            "speed velocity acceleration difference",
            "how does gravity work",
            "waves and sound",
        ],
        "resources": [
            "Newton's three laws with everyday examples",
            "Kinetic and potential energy",
            "Series and parallel circuits",
            "Describing motion: speed, velocity, acceleration",
            "Gravity from apples to orbits",
            "How sound travels as a wave",
        ],
    },
    "literature": {
        "queries": [
            "themes in romeo and juliet",
            "how to write a persuasive essay",
            "what is a metaphor",
            "poetry analysis tips",
            "summary of to kill a mockingbird",
            "narrative point of view",
        ],
        "resources": [
            "Love and fate in Romeo and Juliet",
            "Persuasive essay structure and examples",
            "Metaphor, simile and personification",
            "Close reading a poem in five steps",
            "To Kill a Mockingbird chapter guide",
            "First, second and third person narrators",
        ],
    },
    "geography": {
        "queries": [
            "how are mountains formed",
            "climate zones of the world",
            "what causes earthquakes",
            "longest rivers in the world",
            "map reading skills",
            "how volcanoes erupt",
        ],
        "resources": [
            "Plate tectonics and mountain building",
            "Tropical, temperate and polar climates",
            "Faults, plates and earthquakes",
            "The Nile, the Amazon and other great rivers",
            "Latitude, longitude and map scale",
            "Inside a volcano: magma and eruptions",
        ],
    },
    "programming": {
        "queries": [
            "python for loops",
            "what is recursion",
            "learn html basics",
            "how do variables work in programming",
            "sorting algorithms explained",
            "debugging tips",
        ],
        "resources": [
            "Looping over lists in Python",
            "Recursion with factorial and Fibonacci",
            "Your first web page in HTML",
            "Variables, types and assignment",
            "Bubble, merge and quick sort",
            "A beginner's guide to debugging code",
        ],
    },
}


@dataclass
class DemoCorpus:
    query_ids: dict[str, ObjectId]  # query text -> _id
    resource_ids: dict[str, ObjectId]  # title -> _id
    subject_of_query: dict[str, str]
    subject_of_resource: dict[str, str]


def insert_corpus(db: Db, rng: random.Random | None = None) -> DemoCorpus:
    """Insert every demo query and resource once."""
    rng = rng or random.Random(0)
    now = datetime.now(UTC)
    corpus = DemoCorpus({}, {}, {}, {})
    for subject, content in SUBJECTS.items():
        for text in content["queries"]:
            _id = (
                db[USER_QUERIES]
                .insert_one({"query_text": text, "user_id": f"user-{rng.randrange(1000)}", "created_at": now})
                .inserted_id
            )
            corpus.query_ids[text], corpus.subject_of_query[text] = _id, subject
        for title in content["resources"]:
            description = f"A {subject} lesson for secondary students. {title}."
            _id = (
                db[RESOURCES]
                .insert_one({"title": title, "description": description, "subject": subject, "level": "secondary"})
                .inserted_id
            )
            corpus.resource_ids[title], corpus.subject_of_resource[title] = _id, subject
    return corpus


class Ranker(Protocol):
    """What the demo's search API ranks with (`eduranker.serving.ChampionReranker` fits)."""

    def rerank(self, query: str, documents: Sequence[str], *, key: str | None = None) -> Any: ...


def document_text(corpus: DemoCorpus, title: str) -> str:
    return f"{title}\n\nA {corpus.subject_of_resource[title]} lesson for secondary students. {title}."


def serve_results(
    db: Db, corpus: DemoCorpus, rng: random.Random, results_per_query: int = 6, ranker: Ranker | None = None
) -> list[tuple[ObjectId, bool]]:
    """One served result list per query: half on-subject, half off. Without a ranker, random scores on
    the corpus's own searches (the seed history). With one, as the search API does: a new search
    (`user_queries`, with its user) ordered by `result.order`, each result written with its
    `result.inference_fields()` (the version that contributed it). Returns (inference id, relevant)."""
    served = []
    now = datetime.now(UTC)
    for query, query_id in corpus.query_ids.items():
        subject = corpus.subject_of_query[query]
        on = [t for t, s in corpus.subject_of_resource.items() if s == subject]
        off = [t for t, s in corpus.subject_of_resource.items() if s != subject]
        picks = rng.sample(on, results_per_query // 2) + rng.sample(off, results_per_query - results_per_query // 2)
        rng.shuffle(picks)
        scores = [rng.random() for _ in picks]
        rows: list[tuple[str, dict[str, Any]]]
        if ranker is None:
            ranked = sorted(zip(picks, scores, strict=True), key=lambda pick: -pick[1])
            rows = [(t, {"rank": r, "score": sc, "model_version": None}) for r, (t, sc) in enumerate(ranked, 1)]
        else:
            user = f"user-{rng.randrange(1000)}"
            result = ranker.rerank(query, [document_text(corpus, t) for t in picks], key=user)
            search = {"query_text": query, "user_id": user, "created_at": now}
            query_id = db[USER_QUERIES].insert_one(search).inserted_id
            rows = [(picks[doc], fields) for doc, fields in zip(result.order, result.inference_fields(), strict=True)]
        for title, fields in rows:
            doc = {"query_id": query_id, "resource_id": corpus.resource_ids[title], **fields, "created_at": now}
            served.append((db[INFERENCES].insert_one(doc).inserted_id, corpus.subject_of_resource[title] == subject))
    return served


def feedback_updates(
    served: list[tuple[ObjectId, bool]], rng: random.Random, noise: float = 0.05
) -> Iterator[tuple[ObjectId, str]]:
    """(inference id, 'like'|'dislike') in random order; a `noise` share of users disagree."""
    order = list(served)
    rng.shuffle(order)
    for inference_id, relevant in order:
        liked = relevant != (rng.random() < noise)
        yield inference_id, "like" if liked else "dislike"


def give_feedback(db: Db, inference_id: ObjectId, value: str | None, at: datetime | None = None) -> None:
    """What the API does when a user reacts (None removes the reaction)."""
    if value is None:
        db[INFERENCES].update_one({"_id": inference_id}, {"$unset": {"feedback": ""}})
        return
    at = at or datetime.now(UTC)
    db[INFERENCES].update_one({"_id": inference_id}, {"$set": {"feedback": value, "feedback_at": at}})


def seed_feedback(db: Db, *, seed: int = 0, rounds: int = 1, noise: float = 0.05) -> int:
    """Corpus + `rounds` served lists per query, every result judged. Returns feedback written."""
    rng = random.Random(seed)
    corpus = insert_corpus(db, rng)
    written = 0
    start = datetime.now(UTC) - timedelta(minutes=5)
    for _ in range(rounds):
        for i, (inference_id, value) in enumerate(feedback_updates(serve_results(db, corpus, rng), rng, noise)):
            give_feedback(db, inference_id, value, start + timedelta(milliseconds=i))
            written += 1
    return written


def labelled_pairs(seed: int = 0, noise: float = 0.05) -> list[tuple[str, str, float, str]]:
    """The demo's judgements without a database: (query, document, label, subject) for benchmarks."""
    rng = random.Random(seed)
    rows = []
    for subject, content in SUBJECTS.items():
        others = [(s, t) for s, c in SUBJECTS.items() if s != subject for t in c["resources"]]
        for query in content["queries"]:
            picks = [(subject, t) for t in rng.sample(content["resources"], 3)] + rng.sample(others, 3)
            for resource_subject, title in picks:
                relevant = (resource_subject == subject) != (rng.random() < noise)
                document = f"{title}\n\nA {resource_subject} lesson for secondary students. {title}."
                rows.append((query, document, 1.0 if relevant else 0.0, subject))
    return rows
