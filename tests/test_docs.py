"""The README is the front door and `docs/` the reference: both stay small enough, linked and true.

Pure file reads: no server, no model.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import unicodedata
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from eduranker.settings import Settings
from tests.celery_worker import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12 * 1024

# [text](target) not preceded by "!" (images are links too, to a file: keep them), outside code.
LINK = re.compile(r"\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text a reader sees as prose: fenced blocks and inline code removed."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercased, punctuation but `-` and `_` removed,
    each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"[`*]|<[^>]+>", "", text).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of `path` (a repeated slug gets -1, -2, …)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def test_the_readme_is_a_front_door_not_a_manual() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move reference to docs/"


def test_slugs_follow_githubs_rule() -> None:
    assert slug("The producer's guarantees") == "the-producers-guarantees"
    assert slug("Jobs, runs and fencing") == "jobs-runs-and-fencing"
    assert slug("The `champion` and `previous` symlinks") == "the-champion-and-previous-symlinks"
    assert slug("Producer (targets: ≥ 0.9; p99 ≤ 250 ms)") == "producer-targets--09-p99--250-ms"
    assert slug("How a run of the task ends (`worker/results.py`)") == "how-a-run-of-the-task-ends-workerresultspy"


def test_the_link_finder_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "See [a](a.md), [b](../b.md#x) and [web](https://x.org).\n`[c](c.md)`\n```\n[d](d.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["a.md", "../b.md#x"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, fragment = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no file {os.path.relpath(resolved, ROOT)}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: {resolved.name} has no heading #{fragment}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link (add a line to 'Where to read on'): {unlinked}"


def configuration_table() -> dict[str, str]:
    """Each variable in docs/configuration.md's tables (one per concern), with the default its row gives it."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    header = "| variable | default | meaning |"
    tables = [part.split("\n\n", 1)[0] for part in text.split(header)[1:]]
    assert len(tables) >= 1, f"docs/configuration.md has no table headed {header}"
    rows = [line for table in tables for line in table.splitlines()[2:] if line.startswith("|")]
    table: dict[str, str] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        assert names, f"a row names no variable: {row}"
        defaults = re.split(r", | / ", cells[1]) if len(names) > 1 else [cells[1]]
        if len(defaults) == 1:  # one default for each of the row's variables ("empty")
            defaults *= len(names)
        assert len(defaults) == len(names), f"{names}: {len(defaults)} defaults for {len(names)} variables"
        for name, default in zip(names, defaults, strict=True):
            assert name not in table, f"{name} has two rows"
            table[name] = default
    return table


def setting_defaults() -> dict[str, object]:
    """Every setting as its environment variable (field `foo_bar` is read from `FOO_BAR`), with its
    default (MISSING for one made by a factory)."""
    return {f.name.upper(): f.default for f in fields(Settings) if f.metadata["environment"]}


def documents(cell: str, default: object) -> bool:
    """Whether a table cell states `default`: `empty` for "", an ellipsis for a prefix, a note in
    parentheses after the value."""
    value = re.sub(r"\s*\(.*\)$", "", cell).strip().strip("`")
    if isinstance(default, bool):
        return value == str(default).lower()
    if isinstance(default, int | float):
        try:
            return math.isclose(float(value), float(default))
        except ValueError:
            return False
    if "…" in value:  # `c5ee24cb…`, `…/1`: the start or the end of the default
        head, tail = value.split("…", 1)
        return bool(head or tail) and str(default).startswith(head) and str(default).endswith(tail)
    return value == ("empty" if default == "" else str(default))


def test_the_configuration_table_names_every_setting_and_nothing_else() -> None:
    table, settings = configuration_table(), setting_defaults()
    assert len(settings) > 40
    missing, unknown = sorted(set(settings) - set(table)), sorted(set(table) - set(settings))
    assert not missing and not unknown, f"docs/configuration.md misses settings {missing}, names non-settings {unknown}"


def test_the_configuration_table_gives_each_settings_default() -> None:
    table, settings = configuration_table(), setting_defaults()
    wrong = {name: (table[name], settings[name]) for name in table if settings.get(name, MISSING) is not MISSING}
    wrong = {name: pair for name, pair in wrong.items() if not documents(*pair)}
    assert not wrong, f"docs/configuration.md: (documented, actual) defaults differ: {wrong}"


def test_a_default_cell_is_read_as_written() -> None:
    assert documents("100000", 100_000) and documents("1e-4", 1e-4) and not documents("1e-4", 1e-5)
    assert documents("true", True) and not documents("false", True) and not documents("1", True)
    assert documents("empty", "") and documents("`subject`", "subject") and not documents("`subject`", "level")
    assert documents("`c5ee24cb…` (pinned)", "c5ee24cb16019beea") and not documents("`c5ee…`", "c6ee24")
    assert documents("-1 (the models folder's group)", -1) and documents("`…/1`", "redis://h:6379/1")
    assert not documents("`…/1`", "redis://h:6379/0") and not documents("…", "x")


def readme_commands() -> list[list[str]]:
    """The commands of the README's "Two commands on a fresh machine" block, comments dropped."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Two commands on a fresh machine") :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the two commands' block is gone"
    return [words(line) for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # a quote a line of its own does not close: compare by whitespace
        return line.split("#")[0].split()


def script_commands(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [words(line) for line in lines if line.split("#")[0].strip()]


def test_the_readmes_two_commands_are_the_scripts_ci_and_a_newcomer_run() -> None:
    commands = readme_commands()
    assert [c[0] for c in commands] == ["scripts/demo", "scripts/test"]
    for command in commands:
        script = ROOT / command[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{command[0]} is not an executable script"
        assert ["scripts/setup"] in script_commands(script), f"{command[0]} no longer sets up a fresh machine"
    # CI runs exactly the README's test command.
    assert ["scripts/test"] in script_commands(ROOT / ".ci" / "run")
    test_script = script_commands(ROOT / "scripts/test")
    assert any(c[:3] == [".venv/bin/python", "-m", "pytest"] for c in test_script)
    assert any(c[:1] == [".venv/bin/mypy"] for c in test_script)  # beside the tests; it decides too
    assert any("console.localcluster" in c for c in script_commands(ROOT / "scripts/demo"))


def store_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "eduranker" / "store").glob("*.py")))


def test_the_collections_page_names_every_collection_and_index_the_store_uses() -> None:
    source = store_sources()
    constants = dict(re.findall(r'^([A-Z][A-Z0-9_]*) = "([\w.-]+)"', source, re.MULTILINE))
    collections = {constants[name] for name in re.findall(r"\[([A-Z][A-Z0-9_]*)\]", source) if name in constants}
    indexes = set(re.findall(r'ensure_index\(\s*[^,()]+(?:\[[^\]]*\])?,\s*(?:\[[^\]]*\]|\w+),\s*"(\w+)"', source))
    indexes |= {value for name, value in constants.items() if name.endswith("_INDEX")}
    assert {"training_jobs", "model_versions", "inferences"} <= collections and "one_champion" in indexes
    page = (DOCS / "collections.md").read_text(encoding="utf-8")
    unnamed = sorted(name for name in collections | indexes if f"`{name}`" not in page)
    assert not unnamed, f"docs/collections.md does not name {unnamed}"
