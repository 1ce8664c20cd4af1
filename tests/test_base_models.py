"""A base model per language: the table, the pure function, the setting that picks a row (table tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eduranker.base_models import DEFAULTS, OTHER, QUALITY, default_base
from eduranker.settings import Settings
from tests.celery_worker import ROOT
from tests.tiny_families import FAMILIES

ENGLISH, FRENCH = "cross-encoder/ms-marco-MiniLM-L-6-v2", "antoinelouis/crossencoder-mMiniLMv2-L6-mmarcoFR"
MULTILINGUAL = "cross-encoder/mmarco-mMiniLMv2-L12-H384-v1"


@pytest.mark.parametrize(
    ("language", "tier", "name"),
    [
        ("en", "default", ENGLISH),
        ("fr", "default", FRENCH),
        ("de", "default", MULTILINGUAL),  # any other language: the multilingual default
        ("ar", "default", MULTILINGUAL),
        ("fr", "quality", "antoinelouis/crossencoder-mdebertav3-base-mmarcoFR"),
        ("en", "quality", "BAAI/bge-reranker-v2-m3"),
        ("pt", "quality", "BAAI/bge-reranker-v2-m3"),
    ],
)
def test_each_language_has_a_default_base(language, tier, name):
    assert default_base(language, tier).name == name


@pytest.mark.parametrize(("language", "tier"), [("French", "default"), ("", "default"), ("fr", "best")])
def test_a_bad_language_or_tier_is_refused(language, tier):
    with pytest.raises(ValueError, match="must be"):
        default_base(language, tier)


def test_every_default_is_of_a_family_the_tiny_models_cover_and_only_the_english_one_is_pinned_here():
    bases = [*DEFAULTS.values(), *QUALITY.values()]
    assert {b.family for b in bases} <= set(FAMILIES)
    assert [b.name for b in bases if b.revision] == [ENGLISH]
    assert DEFAULTS[OTHER].name == MULTILINGUAL


@pytest.mark.parametrize(
    ("environ", "name", "revision"),
    [
        ({}, ENGLISH, "c5ee24cb16019beea0893ab7796b1df96625c6b8"),  # today's deployments: unchanged
        ({"BASE_LANGUAGE": "fr"}, FRENCH, ""),  # not pinned here: the operator pins it
        ({"BASE_LANGUAGE": "fr", "BASE_MODEL_REVISION": "0123abcd"}, FRENCH, "0123abcd"),
        ({"BASE_LANGUAGE": "de"}, MULTILINGUAL, ""),
        ({"BASE_LANGUAGE": "fr", "BASE_MODEL_NAME": "org/own"}, "org/own", Settings.base_model_revision),
    ],
)
def test_base_language_picks_the_base_where_base_model_name_is_not_set(environ, name, revision):
    settings = Settings.from_env(environ)
    assert (settings.base_model_name, settings.base_model_revision) == (name, revision)


def test_a_bad_base_language_stops_the_process_with_one_line():
    code = "from eduranker.settings import load_or_exit; load_or_exit({'BASE_LANGUAGE': 'Français'})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "invalid setting: BASE_LANGUAGE='Français': must be a language code (ISO 639, lower case: en, fr, de)"
    ]


def test_the_languages_page_lists_every_base_of_the_tables():
    page = (ROOT / "docs" / "languages.md").read_text(encoding="utf-8")
    for base in [*DEFAULTS.values(), *QUALITY.values()]:
        assert f"`{base.name}`" in page, base.name
