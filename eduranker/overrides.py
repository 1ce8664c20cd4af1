"""A training job's overrides, checked before anything loads: each has a type and a range, and
`base_model` must be the configured model, a hub name in ALLOWED_BASE_MODELS or a folder under
BASE_MODELS_ROOT. Whoever can send the task (a Flower user, anyone on the broker) chooses these values,
so they are hostile input: a refusal names the override and why, and the job fails with that reason.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eduranker.settings import Settings

# Override name → Settings field.
FIELDS = {
    "num_epochs": "num_epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "head_learning_rate": "head_learning_rate",
    "base_model": "base_model_name",
    "max_length": "max_length",
    "warm_start": "warm_start",
    "seed": "seed",
}
MAX_REASON_CHARS = 500  # a job's reason is shown in lists and logs


class OverrideRefused(ValueError):
    """An override outside what a job accepts; the message names it."""


@dataclass(frozen=True)
class Bound:
    kind: type
    low: float
    high: float
    why: str  # what the upper bound protects

    def problem(self, value: Any) -> str | None:
        accepted = (int, float) if self.kind is float else (int,)
        if isinstance(value, bool) or not isinstance(value, accepted):
            return f"expected {'a whole number' if self.kind is int else 'a number'}"
        if self.kind is float and not math.isfinite(value):
            return "expected a finite number"
        if not self.low <= value <= self.high:
            return f"must be between {self.low:g} and {self.high:g} ({self.why})"
        return None


# Tighter than the settings' own checks: an operator may configure more, a task's sender may not.
BOUNDS: dict[str, Bound] = {
    "num_epochs": Bound(int, 1, 50, "a job holds the only training slot"),
    "batch_size": Bound(int, 1, 1024, "memory of one device"),
    "learning_rate": Bound(float, 1e-7, 1e-2, "larger rates destroy a pretrained encoder"),
    "head_learning_rate": Bound(float, 1e-7, 1.0, "the head's rate"),
    "max_length": Bound(int, 8, 512, "the base models' position limit"),
    "seed": Bound(int, 0, 2**32 - 1, "torch's seed range"),
}


def _base_model_problem(value: Any, settings: Settings) -> tuple[str | None, str]:
    """(problem, the model to load): the configured model, an allowed hub name, or a folder that
    resolves (symlinks followed) inside BASE_MODELS_ROOT."""
    if not isinstance(value, str) or not value:
        return "expected a model name", ""
    if value == settings.base_model_name:
        return None, value
    allowed = {e.strip() for e in settings.allowed_base_models.split(",") if e.strip()}
    if value in allowed:
        return None, value
    root = settings.base_models_root
    if root:
        real_root = os.path.realpath(root)
        resolved = os.path.realpath(os.path.join(real_root, value))
        if resolved != real_root and resolved.startswith(real_root + os.sep):
            return None, resolved
    return "not BASE_MODEL_NAME, not in ALLOWED_BASE_MODELS and not a folder under BASE_MODELS_ROOT", ""


def _problem(name: str, value: Any, settings: Settings) -> tuple[str | None, Any]:
    if name == "base_model":
        return _base_model_problem(value, settings)
    if name == "warm_start":
        return (None, value) if isinstance(value, bool) else ("expected true or false", None)
    return BOUNDS[name].problem(value), value


def checked_overrides(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides as Settings fields, or OverrideRefused naming the first bad one (names sorted)."""
    unknown = set(overrides) - set(FIELDS) - {"reason"}
    if unknown:
        raise OverrideRefused(f"unknown job overrides: {', '.join(sorted(map(str, unknown)))}")
    reason = overrides.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise OverrideRefused(f"job override reason: expected text of at most {MAX_REASON_CHARS} characters")
    mapped: dict[str, Any] = {}
    for name in sorted(set(overrides) & set(FIELDS)):
        value = overrides[name]
        if value is None:
            continue
        problem, usable = _problem(name, value, settings)
        if problem:
            raise OverrideRefused(f"job override {name}={_shown(value)}: {problem}")
        mapped[FIELDS[name]] = usable
    if mapped.get("base_model_name", settings.base_model_name) != settings.base_model_name:
        mapped["base_model_revision"] = ""  # BASE_MODEL_REVISION pins the configured model only
    return mapped


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
