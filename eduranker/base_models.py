"""The default base model of each language: one table, and the pure function that reads it.

`BASE_LANGUAGE` picks a row when `BASE_MODEL_NAME` is not set (`Settings.from_env`); whatever will choose a
base for an index of its own calls `default_base(language)` as well. Why each model, and what a French
base changes: docs/languages.md (the published figures are the model cards' and DécouvrIR's, on
mMARCO-fr dev small, MRR@10).

A revision is the hub commit a name loads at, so that a retrain never starts from silently changed
weights. Only the English default's is known here; the others are empty (the hub's newest commit) until
an operator pins them with `BASE_MODEL_REVISION`, read from the hub where it can be reached.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

# Any language without a row of its own (ISO 639-1 or -3 codes, lower case).
OTHER = "*"
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class BaseModel:
    name: str  # hub name
    revision: str  # hub commit ("" = not pinned here: set BASE_MODEL_REVISION)
    family: str  # the architecture (config.json's model_type), one of those tests/test_families.py covers
    parameters_m: int  # millions of parameters, as published
    licence: str  # the weights' licence on the model card
    mrr10_mmarco_fr: float | None  # MRR@10 on mMARCO-fr dev small (6,980 queries), as published; None: not
    tier: str  # "default": the English default's compute class; "quality": larger and better, slower


# The default tier: one small model per language, the English default's compute class (6-12 layers, 384 wide).
DEFAULTS: dict[str, BaseModel] = {
    "en": BaseModel("cross-encoder/ms-marco-MiniLM-L-6-v2", "c5ee24cb16019beea0893ab7796b1df96625c6b8", "bert",
                    23, "Apache-2.0", None, "default"),
    "fr": BaseModel("antoinelouis/crossencoder-mMiniLMv2-L6-mmarcoFR", "", "xlm-roberta", 107, "MIT", 33.3,
                    "default"),
    OTHER: BaseModel("cross-encoder/mmarco-mMiniLMv2-L12-H384-v1", "", "xlm-roberta", 118, "Apache-2.0", None,
                     "default"),
}  # fmt: skip

# The quality tier: better rankings for several times the compute (a GPU for training and serving).
QUALITY: dict[str, BaseModel] = {
    "fr": BaseModel("antoinelouis/crossencoder-mdebertav3-base-mmarcoFR", "", "deberta-v2", 278, "MIT", 36.2,
                    "quality"),
    OTHER: BaseModel("BAAI/bge-reranker-v2-m3", "", "xlm-roberta", 568, "Apache-2.0", 36.3, "quality"),
}  # fmt: skip


def language_problem(language: str) -> str | None:
    """Why `language` is no language code (None: it is one)."""
    return None if _LANGUAGE.fullmatch(language) else "must be a language code (ISO 639, lower case: en, fr, de)"


def default_base(language: str, tier: str = "default") -> BaseModel:
    """The base model for `language` in `tier` ("default" or "quality"): the language's own row, else
    the multilingual one."""
    problem = language_problem(language)
    if problem:
        raise ValueError(f"language {language!r}: {problem}")
    table = {"default": DEFAULTS, "quality": QUALITY}.get(tier)
    if table is None:
        raise ValueError(f"tier {tier!r}: must be default or quality")
    return table.get(language) or table[OTHER]


def base_settings(language: str, named: Collection[str]) -> dict[str, str]:
    """`base_model_name` and `base_model_revision` from `language`'s default base, for whichever of the two
    `named` (the settings given explicitly) lacks; nothing when the name is given (its revision is then
    the operator's to give)."""
    if "base_model_name" in named:
        return {}
    base = default_base(language)
    return {"base_model_name": base.name} | (
        {} if "base_model_revision" in named else {"base_model_revision": base.revision}
    )
