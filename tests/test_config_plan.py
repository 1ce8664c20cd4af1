"""One config plan: each concern's config is built from the settings, and no default is written twice.

A setting is declared once (field, default and check in eduranker/settings.py); a concern's config
names the settings it takes (`field(metadata={"setting": ...})`) and `Settings.config` fills it in.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

import pytest

from eduranker.pipeline.gate import GateRule
from eduranker.pipeline.training import TrainConfig
from eduranker.setting_checks import at_least, setting
from eduranker.settings import Settings, SettingsError
from producer.policy import Thresholds
from tests.celery_worker import ROOT

CONFIGS = [Thresholds, GateRule, TrainConfig]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_a_config_takes_its_settings_and_repeats_none_of_their_defaults(config):
    taking = [f for f in fields(config) if "setting" in f.metadata]
    assert taking, f"{config.__name__} takes no setting"
    second_copies = [f.name for f in taking if f.default is not MISSING or f.default_factory is not MISSING]
    assert second_copies == [], f"{config.__name__} repeats the settings' defaults"
    named = {f.name: f.metadata["setting"] for f in taking}
    s = Settings()
    built = s.config(config)
    assert {name: getattr(built, name) for name in named} == {name: getattr(s, key) for name, key in named.items()}


def test_configs_follow_the_settings_they_name():
    s = Settings(
        train_new_feedback=7, auto_retry_limit=1, gate_confidence=0.9, seed=5, num_epochs=2, train_precision="bf16"
    )
    assert (s.config(Thresholds).new_feedback, s.config(Thresholds).retry_limit) == (7, 1)
    assert (s.config(GateRule).confidence, s.config(GateRule).seed) == (0.9, 5)
    training = s.config(TrainConfig)
    assert (training.epochs, training.precision, training.seed) == (2, "bf16", 5)
    assert training.warmup_fraction == 0.1  # a constant of fine-tuning, no setting


def test_a_config_naming_no_setting_is_refused_by_name():
    @dataclass(frozen=True)
    class Typo:
        limit: int = field(metadata={"setting": "train_new_feedbak"})

    with pytest.raises(TypeError, match="Typo.limit names 'train_new_feedbak'"):
        Settings().config(Typo)


# A new trigger threshold, declared as a real one is: a setting (field, default, check: one line of
# eduranker/settings.py) and a field of the trigger's config (producer/policy.py) that names it.
@dataclass(frozen=True)
class SettingsWithBacklog(Settings):
    train_max_backlog: int = setting(5000, at_least(10))


@dataclass(frozen=True)
class ThresholdsWithBacklog(Thresholds):
    max_backlog: int = field(metadata={"setting": "train_max_backlog"})


def test_a_new_threshold_flows_from_its_one_declaration_to_the_trigger():
    assert SettingsWithBacklog().config(ThresholdsWithBacklog).max_backlog == 5000
    from_env = SettingsWithBacklog.from_env({"TRAIN_MAX_BACKLOG": "70", "TRAIN_NEW_FEEDBACK": "20"})
    th = from_env.config(ThresholdsWithBacklog)
    assert (th.max_backlog, th.new_feedback, th.min_feedback) == (70, 20, 250)
    assert from_env.with_overrides(train_max_backlog=99).config(ThresholdsWithBacklog).max_backlog == 99
    with pytest.raises(SettingsError, match=r"^TRAIN_MAX_BACKLOG='5': must be at least 10$"):
        SettingsWithBacklog.from_env({"TRAIN_MAX_BACKLOG": "5"})


def shipped_settings() -> dict[str, str]:
    """The settings that settings.env (what docker-compose's trainer services read) writes out."""
    lines = (ROOT / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_compose_settings_file_gives_the_settings_own_defaults():
    """It need not list a setting (the process has its default); those it lists, as shipped, keep it."""
    shipped = shipped_settings()
    assert len(shipped) >= 3, "expected the trigger's settings in settings.env"
    defaults = {f.name.upper(): f.default for f in fields(Settings)}
    parsed = Settings.from_env(shipped)
    assert {name: getattr(parsed, name.lower()) for name in shipped} == {name: defaults[name] for name in shipped}
