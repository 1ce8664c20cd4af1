"""A labelled retrieval corpus of real human-written text: Debian package descriptions.

Written by each package's maintainer; read from a Debian system's `/var/lib/dpkg/status` and kept in
`bench/data/debian_packages.jsonl.gz` (737 packages), so that every run reads the same corpus
(`python bench/packages_corpus.py` rewrites it from this machine's packages). A package's
one-line summary is the query, its long description (under its name) the one relevant document, and
packages of the same section ("libs", "python", "admin", ...) are the hard negatives among its
candidates: they are written in the same register about neighbouring things. The section is each
document's `subject`, so the gate's per-slice check has real slices to look at.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/var/lib/dpkg/status")
SHIPPED = Path(__file__).resolve().parent / "data" / "debian_packages.jsonl.gz"
_NAME_IN_SUMMARY = re.compile(r"\s+")


@dataclass(frozen=True)
class Package:
    name: str
    section: str
    summary: str  # the query
    description: str  # the document's text


@dataclass(frozen=True)
class Corpus:
    packages: list[Package]
    candidates: dict[str, list[str]]  # query package → candidate package names (the relevant one among them)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for p in self.packages:
            digest.update(f"{p.name}\x1f{p.summary}\x1f{p.description}\n".encode())
        return digest.hexdigest()[:12]


def _stanzas(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and last:
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if fields:
            out.append(fields)
    return out


def _long_text(lines: list[str]) -> str:
    return " ".join("" if line == "." else line for line in lines).strip()


def read_packages(path: Path = STATUS, min_words: int = 12) -> list[Package]:
    """Installed packages with a summary and a long description of at least `min_words` words."""
    seen: dict[str, Package] = {}
    for fields in _stanzas(path.read_text(encoding="utf-8", errors="replace")):
        name, description = fields.get("Package"), fields.get("Description", "")
        summary, *rest = description.split("\n") if description else [""]
        body = _long_text(rest)
        if not name or not summary or len(body.split()) < min_words:
            continue
        section = fields.get("Section", "misc").split("/")[-1]
        seen[name] = Package(name, section, summary.strip(), body)
    # One query per summary: identical summaries (a library and its -dev package) cannot be told apart.
    by_summary: dict[str, list[Package]] = {}
    for package in seen.values():
        by_summary.setdefault(package.summary.casefold(), []).append(package)
    return sorted((group[0] for group in by_summary.values() if len(group) == 1), key=lambda p: p.name)


def load_shipped(path: Path = SHIPPED) -> list[Package]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Package(**json.loads(line)) for line in f if line.strip()]


def write_shipped(packages: list[Package], path: Path = SHIPPED) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for p in packages:
            f.write(
                json.dumps({"name": p.name, "section": p.section, "summary": p.summary, "description": p.description})
                + "\n"
            )


def build(packages: list[Package] | None = None, per_query: int = 20, hard: int = 12, seed: int = 0) -> Corpus:
    """Each query's candidates: its package, `hard` others of its section where it has them, the rest random."""
    packages = load_shipped() if packages is None else packages
    rng = random.Random(seed)
    by_section: dict[str, list[str]] = {}
    for p in packages:
        by_section.setdefault(p.section, []).append(p.name)
    names = [p.name for p in packages]
    candidates = {}
    for p in packages:
        same = [n for n in by_section[p.section] if n != p.name]
        picks = rng.sample(same, min(hard, len(same)))
        others = [n for n in names if n != p.name and n not in set(picks)]
        picks += rng.sample(others, per_query - 1 - len(picks))
        candidates[p.name] = [p.name, *picks]
        rng.shuffle(candidates[p.name])
    return Corpus(packages, candidates)


def document(p: Package) -> tuple[str, str]:
    """(title, description) as the resources collection stores them."""
    return p.name, p.description


if __name__ == "__main__":
    found = read_packages()
    write_shipped(found)
    print(f"{len(found)} packages written to {SHIPPED}", file=sys.stderr)
