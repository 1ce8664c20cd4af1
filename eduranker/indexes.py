"""Search indexes: which feedback each one owns, and what sets it apart (docs/indexes.md).

An index is a value (`Index`), never a module constant: its name keys its records (its own
collections, `<name>.training_jobs`, ...), its models folder (`MODELS_DIR/<name>/`), its version names
(`<name>-v0001`), its Celery queue (`training.<name>`) and its metrics (label `index`). The index named
`default` keeps today's names for all of these, so a deployment with one search changes nothing.

Configured by one setting, INDEXES, a JSON object of name → {"owns": {...}, "SETTING": value, ...}:

    INDEXES='{"fr": {"owns": {"query.index": "fr"}, "BASE_LANGUAGE": "fr"},
              "en": {"owns": {"query.index": ["en", null]}}}'

`owns` claims feedback by fields of the search (`query.<field>`, on `user_queries`) or of the result
(`resource.<field>`, on `resources`): a value, or a list of values (null: the field is absent). Every
condition must hold. The `default` index always exists: without `owns` of its own it owns the feedback
no other index claims (all of it when INDEXES is empty). Two indexes may never claim the same feedback:
their claims must differ in a field they both constrain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT = "default"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Names the models folder already uses at its root (eduranker/models_dir.py), and version names.
# ... and `system`: MongoDB reserves the `system.` collections.
RESERVED = frozenset({"versions", "champion", "previous", "challenger", "staging", "system"})
SOURCES = {"query": "user_queries", "resource": "resources"}
# Fields an index may not claim by: the texts, and ids (a claim is a kind of search, not one search).
UNCLAIMABLE = frozenset({"_id", "query_text", "title", "description", "created_at"})
Scalar = str | int | float | None


class IndexConfigError(ValueError):
    """INDEXES cannot be used; the message says where and why in one line."""


@dataclass(frozen=True)
class Condition:
    """One field of the search (`query`) or of the result (`resource`) taking one of `values`."""

    source: str  # "query" or "resource"
    field: str
    values: tuple[Scalar, ...]

    @property
    def key(self) -> str:
        return f"{self.source}.{self.field}"

    def holds(self, query: Mapping[str, Any] | None, resource: Mapping[str, Any] | None) -> bool:
        doc = query if self.source == "query" else resource
        if doc is None:  # a dangling reference: no search or result to claim it by
            return False
        value = doc.get(self.field)
        if isinstance(value, list):  # MongoDB's reading: an array matches when one element does
            return any(self._one_of(v) for v in value)
        return self._one_of(value)

    def _one_of(self, value: Any) -> bool:
        # As MongoDB compares: a boolean equals only a boolean (Python's True == 1 does not hold there).
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)

    def match(self, prefix: str) -> dict[str, Any]:
        """The MongoDB filter on a joined document at `prefix` (`q` or `r`, an array of the one document
        found): a missing document matches no condition, null included."""
        return {f"{prefix}.0": {"$exists": True}, f"{prefix}.{self.field}": {"$in": list(self.values)}}


@dataclass(frozen=True)
class Claim:
    """The feedback an index owns: every condition of `require` holds, and no claim of `exclude` does
    (the default index's remainder: what no other index claims)."""

    require: tuple[Condition, ...] = ()
    exclude: tuple[tuple[Condition, ...], ...] = ()

    @property
    def everything(self) -> bool:
        return not self.require and not self.exclude

    def conditions(self) -> tuple[Condition, ...]:
        return self.require + tuple(c for claim in self.exclude for c in claim)

    def sources(self) -> set[str]:
        return {c.source for c in self.conditions()}

    def fields(self, source: str) -> list[str]:
        return sorted({c.field for c in self.conditions() if c.source == source})

    def holds(self, query: Mapping[str, Any] | None, resource: Mapping[str, Any] | None) -> bool:
        if not all(c.holds(query, resource) for c in self.require):
            return False
        return not any(all(c.holds(query, resource) for c in claim) for claim in self.exclude)

    def match(self) -> dict[str, Any]:
        """The filter on an inference joined to its search as `q` and its result as `r`."""
        prefix = {"query": "q", "resource": "r"}
        parts: list[dict[str, Any]] = [c.match(prefix[c.source]) for c in self.require]
        if self.exclude:
            parts.append({"$nor": [{"$and": [c.match(prefix[c.source]) for c in claim]} for claim in self.exclude]})
        return {"$and": parts} if parts else {}


@dataclass(frozen=True)
class Index:
    """One search index: its name, the feedback it owns, and the settings it overrides."""

    name: str = DEFAULT
    claim: Claim = Claim()
    overrides: tuple[tuple[str, Any], ...] = ()  # (settings field, value), already checked

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT

    def named(self, what: str) -> str:
        """A name of this index's own (a version, a job id, a queue): today's for the default index."""
        return what if self.is_default else f"{self.name}-{what}"

    def collection(self, name: str) -> str:
        """The collection holding this index's records of `name` (`training_jobs`, ...)."""
        return name if self.is_default else f"{self.name}.{name}"

    @property
    def base_tag(self) -> dict[str, Any]:
        """What marks a result the base model served (`model_version` null) as this index's: the base
        serves every index until it has a champion, so beside other indexes its results are told apart
        by the `index` field ChampionReranker(index=...) writes (none for the default index). Alone,
        the default index needs none."""
        if self.claim.everything:
            return {}
        return {"index": None if self.is_default else self.name}

    def serves(self, result: Mapping[str, Any]) -> bool:
        """Whether a served result (an inference) can be this index's: any named version's (names are
        unique to an index), or the base model's when it carries this index's `base_tag`."""
        return result.get("model_version") is not None or all(result.get(k) == v for k, v in self.base_tag.items())

    @property
    def queue(self) -> str:
        return "training" if self.is_default else f"training.{self.name}"

    def models_dir(self, root: str) -> str:
        return root if self.is_default else f"{root.rstrip('/')}/{self.name}"


def describe_claim(index: Index) -> str:
    """The feedback `index` owns, in words: `query.index in [fr]`, `everything`, `what no other claims`."""

    def words(conditions: tuple[Condition, ...]) -> str:
        return " and ".join(f"{c.key} in {list(c.values)}" for c in conditions)

    claim = index.claim
    if claim.everything:
        return "all feedback"
    if claim.require:
        return f"feedback with {words(claim.require)}"
    return "feedback no other index claims"


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return "a name is 1-32 lowercase letters, digits or _ starting with a letter"
    if name in RESERVED or re.fullmatch(r"v\d+", name):
        return f"{name!r} is a name the models folder uses"
    return None


def _condition(index: str, key: Any, value: Any) -> Condition:
    where = f"INDEXES[{index}].owns"
    source, _, field_name = str(key).partition(".")
    if source not in SOURCES or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name):
        raise IndexConfigError(f"{where}: {key!r} is not query.<field> or resource.<field>")
    if field_name in UNCLAIMABLE:
        raise IndexConfigError(f"{where}: {key!r} cannot claim feedback (a text, an id or a time)")
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, str | int | float | None) for v in values):
        raise IndexConfigError(f"{where}.{key}: expected a value or a non-empty list of values (text, number, null)")
    return Condition(source, field_name, tuple(values))


def _claim(name: str, owns: Any) -> tuple[Condition, ...]:
    if not isinstance(owns, dict) or not owns:
        raise IndexConfigError(
            f"INDEXES[{name}].owns: expected an object of query.<field> or resource.<field> → values"
        )
    return tuple(_condition(name, key, value) for key, value in sorted(owns.items()))


def disjoint(a: Sequence[Condition], b: Sequence[Condition]) -> bool:
    """True when no feedback can satisfy both claims: a field both constrain to disjoint values."""
    by_key = {c.key: set(c.values) for c in a}
    return any(c.key in by_key and not (by_key[c.key] & set(c.values)) for c in b)


def _json(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IndexConfigError(f"INDEXES: not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(raw, dict):
        raise IndexConfigError("INDEXES: expected a JSON object of index name → its configuration")
    return raw


@dataclass(frozen=True)
class SettingRules:
    """What an index may set: `names` (upper case), each value's `problem(name, value)` as settings
    check it, and the `process_wide` settings no index may set."""

    names: frozenset[str] = frozenset()
    problem: Callable[[str, Any], str | None] = lambda _name, _value: None
    process_wide: frozenset[str] = frozenset()

    def overrides(self, index: str, config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        found = []
        for key, value in config.items():
            if key == "owns":
                continue
            if key in self.process_wide:
                raise IndexConfigError(f"INDEXES[{index}]: {key} is a setting of the whole process, not of an index")
            if key not in self.names:
                raise IndexConfigError(f"INDEXES[{index}]: unknown field {key!r} (owns, or a setting an index may set)")
            problem = self.problem(key, value)
            if problem:
                raise IndexConfigError(f"INDEXES[{index}].{key}={value!r}: {problem}")
            found.append((key.lower(), value))
        return tuple(found)


def _one(
    name: Any, config: Any, rules: SettingRules
) -> tuple[tuple[Condition, ...] | None, tuple[tuple[str, Any], ...]]:
    problem = name_problem(name)
    if problem:
        raise IndexConfigError(f"INDEXES: bad index name {name!r}: {problem}")
    if not isinstance(config, dict):
        raise IndexConfigError(f"INDEXES[{name}]: expected an object")
    own = config.get("owns")
    if own is None and name != DEFAULT:
        raise IndexConfigError(f"INDEXES[{name}]: no `owns`: say which feedback is this index's")
    return (None if own is None else _claim(name, own)), rules.overrides(name, config)


def parse(text: str, rules: SettingRules = SettingRules()) -> tuple[Index, ...]:
    """The indexes INDEXES configures, the default one first; one line naming the first problem."""
    claims: dict[str, tuple[Condition, ...]] = {}
    overrides: dict[str, tuple[tuple[str, Any], ...]] = {}
    for name, config in _json(text).items():
        claim, overrides[name] = _one(name, config, rules)
        if claim is not None:
            claims[name] = claim
    named = sorted(claims)
    for i, a in enumerate(named):
        for b in named[i + 1 :]:
            if not disjoint(claims[a], claims[b]):
                raise IndexConfigError(f"INDEXES: {a} and {b} claim the same feedback (their owns must differ in a "
                                       f"field both name)")  # fmt: skip
    others = tuple(claims[n] for n in named if n != DEFAULT)
    default_claim = Claim(claims[DEFAULT]) if DEFAULT in claims else Claim(exclude=others)
    default = Index(DEFAULT, default_claim, overrides.get(DEFAULT, ()))
    return (default, *(Index(n, Claim(claims[n]), overrides.get(n, ())) for n in sorted(overrides) if n != DEFAULT))


DEFAULT_INDEX = Index()  # the one index of a deployment that configures none: today's names, all feedback
