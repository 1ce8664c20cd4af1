"""The French corpus: Debian's French package descriptions, as `bench/packages_corpus.py` builds the English one.

Written by Debian's French translators (the DDTP), read from the archive's `Translation-fr` list
(`apt-get -o Acquire::Languages=fr update` puts it under /var/lib/apt/lists/), and kept in
`bench/data/debian_packages_fr.jsonl.gz` so that every run reads the same corpus
(`python bench/french_corpus.py` rewrites it from this machine's lists). A package's French one-line
summary is the query, its French long description the relevant document, and packages of the same
section are the hard negatives. Sections come from the English `Packages` list of the same archive
(a translation names its package and the md5 of the English description it translates: both must
match, so a stale translation is left out). The text is kept exactly as written: guillemets, typographic
apostrophes, non-breaking spaces and ligatures are what the trainer must handle.

    .venv/bin/python bench/french_corpus.py [--packages 800] [--lists /var/lib/apt/lists]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

from packages_corpus import Package, _long_text, _stanzas, write_shipped

LISTS = Path("/var/lib/apt/lists")
SHIPPED = Path(__file__).resolve().parent / "data" / "debian_packages_fr.jsonl.gz"


def read_list(path: Path) -> str:
    """A list file's text, whatever apt compressed it with (apt-helper knows every format apt writes)."""
    if path.suffix in (".lz4", ".gz", ".xz", ".zst", ".bz2"):
        return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True,
                              capture_output=True, text=True, errors="replace").stdout  # fmt: skip
    return path.read_text(encoding="utf-8", errors="replace")


def sections(lists: Path) -> dict[tuple[str, str], str]:
    """(package, English description md5) → section, from the main archive's Packages lists."""
    out: dict[tuple[str, str], str] = {}
    for path in sorted(lists.glob("*_main_binary-*_Packages*")):
        for fields in _stanzas(read_list(path)):
            name, md5 = fields.get("Package"), fields.get("Description-md5")
            if name and md5:
                out[(name, md5)] = fields.get("Section", "misc").split("/")[-1]
    return out


def read_translations(lists: Path, min_words: int = 12) -> list[Package]:
    """French descriptions of packages whose section is known, with a long text of `min_words` words."""
    known = sections(lists)
    found: dict[str, Package] = {}
    for path in sorted(lists.glob("*_main_i18n_Translation-fr*")):
        for fields in _stanzas(read_list(path)):
            name, md5, description = fields.get("Package"), fields.get("Description-md5"), fields.get("Description-fr")
            section = known.get((name or "", md5 or ""))
            if not name or not description or section is None:
                continue
            summary, *rest = description.split("\n")
            body = _long_text(rest)
            if summary.strip() and len(body.split()) >= min_words:
                found[name] = Package(name, section, summary.strip(), body)
    # One query per summary, as in the English corpus: identical summaries cannot be told apart.
    by_summary: dict[str, list[Package]] = {}
    for package in found.values():
        by_summary.setdefault(package.summary.casefold(), []).append(package)
    return sorted((group[0] for group in by_summary.values() if len(group) == 1), key=lambda p: p.name)


def sample(packages: list[Package], n: int) -> list[Package]:
    """A fixed sample of `n`: the packages whose names hash lowest (the same from any machine's lists)."""
    ranked = sorted(packages, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    return sorted(ranked[:n], key=lambda p: p.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=800)
    parser.add_argument("--lists", type=Path, default=LISTS)
    args = parser.parse_args()
    found = read_translations(args.lists)
    if not found:
        print(f"no French translations under {args.lists}: apt-get -o Acquire::Languages=fr update", file=sys.stderr)
        return 1
    chosen = sample(found, args.packages)
    write_shipped(chosen, SHIPPED)
    print(f"{len(chosen)} of {len(found)} French descriptions written to {SHIPPED}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
