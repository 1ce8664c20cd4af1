"""French text handled as French: the text given to the model, the query key, the duplicates rule and
the split's compatibility with epochs recorded before the key's version 2 (table tests)."""

import random
import re
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from eduranker.pipeline.pairs import SnapshotBuilder, build_snapshot
from eduranker.pipeline.split import SplitKey, is_heldout
from eduranker.pipeline.text import clean_text, query_key

NBSP, NNBSP = "\u00a0", "\u202f"


@pytest.mark.parametrize(
    ("typed", "same_as"),
    [
        ("l’eau", "l'eau"),  # typographic apostrophe
        ("l‘eau", "l'eau"),  # opening single quote typed for one
        ("lʼeau", "l'eau"),  # modifier letter apostrophe
        ("l´eau", "l'eau"),  # acute accent typed for one (NFKC alone would make it a space and a mark)
        ("L’ÉCOLE", "l'école"),
        (f"qu’est-ce que c’est{NNBSP}?", "qu'est-ce que c'est?"),  # narrow no-break space before ?
        (f"qu'est-ce que c'est{NBSP}?", "qu'est-ce que c'est ?"),  # and a no-break or plain space, or none
        (f"définition{NBSP}: photosynthèse", "définition: photosynthèse"),
        (f"attention{NNBSP}!", "attention !"),
        ("«\u00a0les misérables\u00a0»", '"les misérables"'),  # guillemets with their spaces, and quotes
        ("“les misérables”", '"les misérables"'),
        ("‹ oui ›", '"oui"'),
        ("cœur", "coeur"),  # ligatures match their two letters
        ("ŒUVRE", "oeuvre"),
        ("ex æquo", "ex aequo"),
        ("e\u0301le\u0300ve", "élève"),  # an accent typed as a combining mark
        ("ﬁlm", "film"),  # a typographic ligature NFKC already unfolds
        ("porte\u2011monnaie", "porte-monnaie"),  # non-breaking hyphen
        ("  la\u200b  révolution\tfrançaise ", "la révolution française"),
    ],
)
def test_french_variants_of_one_query_share_its_key(typed, same_as):
    assert query_key(typed) == query_key(same_as)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("côte", "cote"),  # accents are never stripped
        ("côte", "côté"),
        ("élève", "eleve"),
        ("pêche", "péché"),
        ("l'eau", "leau"),  # an apostrophe is not nothing
        ("où", "ou"),
        ('"oui"', "oui"),  # quotes still mark a phrase
    ],
)
def test_queries_that_differ_in_french_keep_different_keys(one, other):
    assert query_key(one) != query_key(other)


@pytest.mark.parametrize(
    "text", ["l’eau", "«\u00a0cœur\u00a0»", "qu’est-ce\u202f?", "e\u0301le\u0300ve", "ÆSOP", "a  b\u200b", "‹ x ›"]
)
def test_the_key_is_its_own_key(text):
    assert query_key(query_key(text)) == query_key(text)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("qu’est-ce que c’est\u202f?", "qu’est-ce que c’est ?"),  # apostrophes kept, the space a plain one
        ("«\u00a0cœur\u00a0»", "« cœur »"),  # guillemets and ligatures kept: the model reads them
        ("e\u0301le\u0300ve", "élève"),  # NFC: one character per accented letter, as the tokenizers expect
        ("ÉLÈVE", "ÉLÈVE"),  # case and accents kept
        ("ﬁlm", "ﬁlm"),  # NFC, not NFKC: the text is the user's
        ("a\u00a0\u00a0 b\n\n\u202fc", "a b\nc"),
    ],
)
def test_the_text_given_to_the_model_keeps_french_as_written(raw, clean):
    assert clean_text(raw) == clean


def test_rows_typed_two_ways_for_one_resource_are_one_pair_and_the_latest_wins():
    resource, t0 = ObjectId(), datetime(2026, 3, 1, tzinfo=UTC)

    def row(text: str, feedback: str, minutes: int) -> dict:
        return {"_id": ObjectId(), "query_id": ObjectId(), "resource_id": resource, "query_found": True,
                "resource_found": True, "query_text_type": "string", "title_type": "string",
                "description_type": "missing", "query_text": text, "title": "La Révolution", "feedback": feedback,
                "feedback_at": t0 + timedelta(minutes=minutes)}  # fmt: skip

    rows = [row("« l’eau »", "like", 0), row('"l\'eau"', "dislike", 5), row("leau", "like", 1)]
    snapshot = build_snapshot(rows, 4000, t0 + timedelta(1))
    kept = sorted((p.query, p.label) for p in snapshot.pairs)
    assert kept == [('"l\'eau"', 0.0), ("leau", 1.0)] and snapshot.duplicates_superseded == 1
    # In an epoch recorded before version 2 the snapshot deduplicates as it always has: three queries.
    legacy = SnapshotBuilder(4000, t0 + timedelta(1), key_version=1)
    for r in rows:
        legacy.add(r)
    assert len(legacy.build().pairs) == 3


# Version 1 exactly as the split hashed it before version 2 (the reference a recorded epoch keeps to).
_V1_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_V1_SPACES = re.compile(r"[ \t\r\f\v]+")


def _v1_clean(value: str) -> str:
    text = _V1_CONTROL.sub(" ", value)
    lines = (_V1_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _v1_key(query: str) -> str:
    text = unicodedata.normalize("NFKC", query).casefold()
    spaced = (" " if ch.isspace() else ch for ch in text)
    visible = "".join(ch for ch in spaced if unicodedata.category(ch) not in ("Cf", "Cc"))
    return " ".join(unicodedata.normalize("NFKC", visible).split())


_PIECES = ["l’", "l'", "eau", "«", "»", "\u00a0", "\u202f", "?", ":", " ", "cœur", "æ", "É", "e\u0301", "ﬁ", "\u200b",
           "\t", "\n", "“", "”", "x", "Ü", "\u2011", "´", "ß"]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_an_epoch_recorded_before_version_2_keeps_every_querys_side(seed):
    """What the worker hashes in a version-1 epoch (version 1 of the new clean text) equals what it hashed
    before (the old key of the old clean text), so no query of an existing deployment changes side."""
    rng = random.Random(seed)
    legacy = SplitKey(1, "5e" * 32, 0.5, query_key_version=1)
    for _ in range(2000):
        raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))
        assert query_key(clean_text(raw), 1) == _v1_key(_v1_clean(raw)), repr(raw)
        assert legacy.query_of(clean_text(raw)) == _v1_key(_v1_clean(raw))


def test_version_2_moves_french_variants_so_only_a_new_epoch_uses_it():
    legacy, current = SplitKey(1, "5e" * 32, 0.5, query_key_version=1), SplitKey(1, "5e" * 32, 0.5)
    variants = ["l’eau", "l'eau", "L’EAU", "lʼeau", "l\u2019eau\u202f?", "l'eau?", "L'EAU ?"]
    assert len({current.query_of(v) for v in variants}) == 2  # "l'eau" and "l'eau?"
    assert len({legacy.query_of(v) for v in variants}) == 6  # version 1 told the typings apart
    # Under version 2 every typing of a query is on one side; the ASCII query keeps its version-1 side.
    assert len({is_heldout(v, current) for v in variants if "?" not in v}) == 1
    assert is_heldout("l'eau", current) == is_heldout("l'eau", legacy)


def test_an_unknown_key_version_is_refused():
    with pytest.raises(ValueError, match="unknown query key version 3"):
        query_key("x", 3)


@pytest.mark.integration
def test_an_epoch_without_a_recorded_key_version_reads_as_version_1_and_keeps_it(db):
    from eduranker.settings import Settings
    from eduranker.store import evaluation_epochs as epochs
    from worker.stages import split_key, split_key_of

    db[epochs.EVALUATION_EPOCHS].insert_one({"_id": 1, "key": "5e" * 32, "test_fraction": 0.2, "started_by": "job a"})
    old = split_key(db, Settings(test_fraction=0.2), "job b")  # what a job of the new code uses
    assert (old.epoch, old.query_key_version) == (1, 1)  # the new code does not start a new epoch for it
    assert old.query_of("« l’eau »") == _v1_key("« l’eau »")
    assert epochs.latest_epoch(db).epoch == 1
    new = epochs.current_epoch(db, 0.3, by="job c", query_key_version=2)  # a new epoch for another reason
    assert (new.epoch, new.query_key_version) == (2, 2)
    assert epochs.get_epoch(db, 2) == new and split_key_of(new).query_of("« l’eau »") == '"l\'eau"'


CLIPPED = [
    "qu’est-ce que c’est\u202f? « Les Misérables »",
    "e\u0301le\u0300ve de l’e\u0301cole",  # combining accents: each is a code point of its own
    "cœur ex æquo\u00a0: œuvre",
    "😀 émoji hors du plan de base 😀",  # outside the BMP: one code point, two UTF-16 units
]


@pytest.mark.integration
@pytest.mark.parametrize("limit", [1, 5, 9, 12, 20])
def test_training_and_serving_clip_french_text_at_the_same_character(db, limit):
    """MAX_TEXT_CHARS cuts a text on the server for training (code points) and in Python for serving
    (`text[:n]`, code points too): the same text is cut at the same place, whatever its accents,
    apostrophes, spaces or ligatures, before either normalises it."""
    from eduranker.store.snapshot import _clipped

    db.texts.insert_many([{"i": i, "text": text} for i, text in enumerate(CLIPPED)])
    rows = db.texts.aggregate([{"$sort": {"i": 1}}, {"$project": {"cut": _clipped("$text", limit)}}])
    assert [row["cut"] for row in rows] == [text[:limit] for text in CLIPPED]
