"""Text as the trainer reads it: the text given to the model, and the key that says two queries are one.

French typing varies in ways that do not change what is asked: a typographic apostrophe or an ASCII one
(« l’eau », "l'eau"), guillemets or quotes, a non-breaking space before `: ; ! ?` or none, the ligature
œ or "oe". Accents do change it ("côte", "cote", "côté" are three queries) and are never stripped.

- `clean_text` (the text given to the model): NFC, so an accent typed as a combining mark is one
  character as everywhere else; non-breaking and narrow non-breaking spaces become ordinary spaces; controls
  removed. Apostrophes, guillemets, ligatures and accents are kept as written: the model reads them.
- `query_key` (deduplication, grouping by query, the split's hash): the query however it is typed.
  Version 1 (NFKC, case-folded, invisible characters removed, whitespace collapsed) is what the splits of
  evaluation epochs recorded before version 2 hash; version 2 adds the French variants above. Which one a
  split uses is recorded in its epoch (docs/gate.md), so no query of an existing epoch changes side.
"""

from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters other than tab and newline, and lone surrogates a tokenizer cannot encode.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
# No-break space, narrow no-break space (French typography before : ; ! ? and inside guillemets), figure space.
_NO_BREAK = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " "})
# Characters that change no visible text: format characters (zero-width space and joiners, bidi marks,
# word joiner, BOM, soft hyphen: Unicode category Cf) and controls (Cc). Removed from query keys.
_INVISIBLE = frozenset(("Cf", "Cc"))

# The query key's versions: 1 until French variants were unified, 2 since. A new epoch records LATEST.
QUERY_KEY_VERSIONS = (1, 2)
LATEST = 2

# Version 2, before NFKC (which would turn the acute accent U+00B4 into a space and a combining mark):
# apostrophes and primes typed for an apostrophe → ', single guillemets → double, hyphens → '-'.
_APOSTROPHES = "\u2019\u2018\u201b\u02bc\u02b9\u2032\u00b4\u0060\uff07"
_TYPED = str.maketrans({**dict.fromkeys(_APOSTROPHES, "'"), "\u2039": "\u00ab", "\u203a": "\u00bb",
                        "\u2010": "-", "\u2011": "-"})  # fmt: skip
# After the spaces are collapsed: no space before : ; ! ? and a closing guillemet or after an opening one
# (« c’est quoi ? » and "c'est quoi?" are one query), then every double quote mark → ".
_SPACE_BEFORE = re.compile(r" (?=[:;!?\u00bb])")
_SPACE_AFTER = re.compile(r"(?<=\u00ab) ")
_QUOTES = str.maketrans(dict.fromkeys("\u00ab\u00bb\u201c\u201d\u201e\u201f\u2033", '"'))
# Ligatures that are letters of their own (NFKC keeps them): matched with their two letters.
_LIGATURES = str.maketrans({"\u0153": "oe", "\u00e6": "ae"})


def clean_text(value: str) -> str:
    """The text given to the model: NFC, no-break spaces as spaces, controls removed, runs of spaces
    collapsed, blank lines dropped."""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", value).translate(_NO_BREAK))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _visible_words(text: str) -> str:
    """Case-folded NFKC text without invisible characters, its whitespace collapsed to single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    spaced = (" " if ch.isspace() else ch for ch in text)  # tabs and newlines are spaces, not controls
    visible = "".join(ch for ch in spaced if unicodedata.category(ch) not in _INVISIBLE)
    return " ".join(unicodedata.normalize("NFKC", visible).split())


def query_key(query: str, version: int = LATEST) -> str:
    """One query however it is typed, for dedup and for the split. Version 1: NFKC, case-folded,
    invisible characters (zero-width, bidi marks, controls) removed, whitespace collapsed. Version 2 also:
    apostrophe variants → ', guillemets and curly quotes → ", no space before : ; ! ? », œ → oe, æ → ae.
    Accents are kept in both."""
    if version == 1:
        return _visible_words(query)
    if version != 2:
        raise ValueError(f"unknown query key version {version!r}: known {QUERY_KEY_VERSIONS}")
    text = _visible_words(query.translate(_TYPED))
    text = _SPACE_AFTER.sub("", _SPACE_BEFORE.sub("", text))
    return text.translate(_QUOTES).translate(_LIGATURES)
