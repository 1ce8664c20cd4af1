"""What a setting's value may be: text from the environment parsed by the field's type, then checked
by the field's own check (declared beside its default in `eduranker/settings.py`)."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import Field, field
from typing import Any, TypeVar

from eduranker.secrets import example_secret_problem

Check = Callable[[Any], str | None]  # a value's problem in words, or None when it is accepted
T = TypeVar("T")


def setting(default: T, check: Check | None = None, *, environment: bool = True) -> T:
    """A settings field: its default and the check its values must pass, declared in one place.
    `environment=False`: a field code sets (`Settings.for_index`), never read from the environment."""
    declared: T = field(default=default, metadata={"check": check, "environment": environment})
    return declared


def problem_of(f: Field[Any], value: Any) -> str | None:
    """Why `value` cannot be field `f`'s value (its type first, then its own check), or None."""
    check: Check | None = f.metadata.get("check")
    return type_problem(f.type, value) or (check(value) if check else None)


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def coerce(type_name: Any, raw: str) -> Any:
    # Field types are strings because of `from __future__ import annotations`.
    name = type_name if isinstance(type_name, str) else type_name.__name__
    if name == "bool":
        return parse_bool(raw)
    if name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
    if name == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return raw


def type_problem(type_name: Any, value: Any) -> str | None:
    name = type_name if isinstance(type_name, str) else type_name.__name__
    if name == "bool" and not isinstance(value, bool):
        return "expected true or false"
    if name == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected a whole number"
    if name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
    if name == "str" and not isinstance(value, str):
        return "expected text"
    return None


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def between(low: float, high: float, *, open_low: bool = True, open_high: bool = True) -> Check:
    def check(v: Any) -> str | None:
        ok_low = v > low if open_low else v >= low
        ok_high = v < high if open_high else v <= high
        if ok_low and ok_high:
            return None
        return f"must be {'>' if open_low else '≥'} {low:g} and {'<' if open_high else '≤'} {high:g}"

    return check


def closed(low: float, high: float) -> Check:
    return between(low, high, open_low=False, open_high=False)


def one_of(*allowed: str) -> Check:
    words = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
    return lambda v: None if v in allowed else f"must be {words}"


def nonempty(what: str) -> Check:
    return lambda v: None if v else f"must name {what}"


def no_cap_or_at_least(low: int) -> Check:
    return lambda v: None if v == 0 or v >= low else f"must be 0 (no cap) or at least {low}"


def is_hex_key(v: str) -> str | None:
    if v == "" or (len(v) >= 32 and len(v) % 2 == 0 and set(v.lower()) <= set("0123456789abcdef")):
        return None
    return "must be empty or an even number (32 or more) of hex digits"


def url(*schemes: str) -> Check:
    return lambda v: None if v.startswith(schemes) else f"must start with {' or '.join(schemes)}"


def secret_url(*schemes: str) -> Check:
    # The scheme, then no example password of .env.example (docs/security.md).
    scheme = url(*schemes)
    return lambda v: scheme(v) or example_secret_problem(v)


def mongo_url(v: str) -> str | None:
    return secret_url("mongodb://", "mongodb+srv://")(v) or weakened_concern(v)


def database_name(v: str) -> str | None:
    return None if v and not set(v) & set('/\\. "$') else "must be a database name"


def hub_revision(v: str) -> str | None:
    return None if v == "" or re.fullmatch(r"[\w.-]{1,100}", v) else "must be a hub revision"


def absolute_path_or_empty(v: str) -> str | None:
    return None if v == "" or v.startswith("/") else "must be an absolute path or empty"


def gpu_index(v: str) -> str | None:
    return None if v == "" or v.isdigit() else "must be a GPU index (digits) or empty"


def plain_field_name(v: str) -> str | None:
    return None if not set(v) & set("$.\0") else "must be empty or a plain field name"


def model_list(v: str) -> str | None:
    # Hub names only (`org/name`); local models are allowed by folder, through BASE_MODELS_ROOT.
    for entry in (e.strip() for e in v.split(",") if e.strip()):
        if ".." in entry or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", entry):
            return f"{entry!r} is not a hub name (org/name)"
    return None


def weakened_concern(url: str) -> str | None:
    """The trainer writes with w=majority, journaled, and reads decisions with majority read concern
    (docs/consistency.md): a URL that asks for less is refused rather than silently weakened."""
    options = {k.lower(): v[-1].lower() for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}
    if options.get("w", "majority") != "majority":
        return f"w={options['w']} weakens the trainer's majority writes (omit w, or w=majority)"
    if options.get("journal", "true") != "true":
        return "journal=false weakens the trainer's journaled writes (omit journal)"
    level = options.get("readconcernlevel", "majority")
    if level not in {"majority", "linearizable"}:
        return f"readConcernLevel={level} weakens the trainer's majority reads (omit it)"
    return None


def json_object_or_empty(v: str) -> str | None:
    """Text that is empty or a JSON object (what it holds is checked by its reader: INDEXES, eduranker/indexes.py)."""
    if not v.strip():
        return None
    try:
        value = json.loads(v)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at character {exc.pos})"
    return None if isinstance(value, dict) else "expected a JSON object"
