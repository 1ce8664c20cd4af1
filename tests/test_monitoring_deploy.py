"""deploy/: the alert rules and Prometheus config pass promtool, the monitoring profile validates, and the
dashboard and alerts only name metrics that the producer or Flower export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from eduranker.settings import Settings
from producer.metrics import MetricsCache, Reading, families, labelled
from tests.celery_worker import ROOT

DEPLOY = ROOT / "deploy"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "le", "inf", "nan"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool (Debian's prometheus package) is installed by scripts/setup"
    return subprocess.run([exe, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml"), ("test", "rules", "alerts_test.yml")],
)
def test_promtool_accepts_the_rules_the_config_and_the_rule_tests(args):
    out = promtool(*args)
    assert out.returncode == 0, out.stdout + out.stderr


def _rules() -> list[dict]:
    return yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet():
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in _rules():
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: no test where it stays quiet"


def test_every_alert_is_explained_in_the_alerts_doc():
    doc = (ROOT / "docs" / "alerts.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-") for h in re.findall(r"^### (.+)$", doc, re.M)
    }
    for rule in _rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: docs/alerts.md has no section #{anchor}"


def _reading() -> Reading:
    """A reading with every kind of figure."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    online = {
        "version": "v0002",
        "feedback": 3,
        "likes": 2,
        "holdback": {"version": "v0001", "feedback": 1, "likes": 1},
    }
    return Reading(
        at=at, feedback={"like": 1}, jobs={"succeeded": (1, at)}, durations={"train": (1, 2.0, [1] * 12)},
        champion={"version": "v0002", "switched_at": at},
        lease={"holder": "me", "expires_at": at + timedelta(seconds=9)},
        state={"evaluated_at": at, "duties": {"send": {"failures": 0, "failures_total": 0}}},
        versions=[{"version": "v0002", "online": online, "metrics": {"after": {"roc_auc": 0.8}},
                   "gate": {"intervals": {"roc_auc": {"delta": 0.1, "low": 0.0, "high": 0.2}}}}],
        disk=(1, 2), workers=1,
    )  # fmt: skip


def _indexed() -> set[str]:
    """The sample names the producer labels `index`: every figure read from an index's records."""
    return {
        s.name for m in labelled([("fr", families(_reading(), "me"))]) for s in m.samples if s.labels["index"] == "fr"
    }


def _exported() -> set[str]:
    """Every sample name the producer exports and Flower's."""
    names = {s.name for m in families(_reading(), "me") for s in m.samples}
    # The process's own figures, served beside the cached ones (no refresh: no database is needed).
    names |= {s.name for m in MetricsCache(None, Settings(), "me").collect() for s in m.samples}  # type: ignore[arg-type]
    from flower.events import get_prometheus_metrics
    from prometheus_client import CollectorRegistry

    flower = get_prometheus_metrics()  # Flower's own, in the default registry its /metrics serves
    for metric in (flower.events, flower.runtime, flower.worker_online, flower.prefetch_time,
                   flower.number_of_prefetched_tasks, flower.worker_number_of_currently_executing_tasks):  # fmt: skip
        registry = CollectorRegistry()
        registry.register(metric)
        names |= {m.name for m in registry.collect()}
        names |= {f"{m.name}{suffix}" for m in registry.collect() for suffix in ("_total", "_bucket", "_sum", "_count")}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside selectors, ranges, strings and
    label lists, not followed by "(" (a function) and not a PromQL keyword."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    found = set(re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", bare))
    return {n for n in found if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", n)}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "eduranker.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_metric_names_are_read_from_promql():
    assert metric_names('max by (le, stage) (rate(a_b_bucket{x="y(z)"}[5m])) / on() c') == {"a_b_bucket", "c"}


def test_every_dashboard_and_alert_query_names_an_exported_metric():
    exported = _exported() | {"up"}
    exprs = _dashboard_exprs() + [rule["expr"] for rule in _rules()]
    assert len(exprs) > 20
    for expr in exprs:
        unknown = metric_names(expr) - exported
        assert not unknown, f"{expr!r} reads {sorted(unknown)}, which nothing exports"


# Alerts on figures that are the same under every index: the broadcast ping, the one models volume.
PROCESS_WIDE_ALERTS = {"EduRankerNoWorker", "EduRankerModelsVolumeFilling"}


def test_alerts_on_an_indexs_figures_fire_per_index_and_name_it():
    indexed = _indexed()
    assert "eduranker_job_failures_in_a_row" in indexed and "eduranker_database_up" not in indexed
    per_index = [rule for rule in _rules() if metric_names(rule["expr"]) <= indexed]
    assert {rule["alert"] for rule in per_index} >= PROCESS_WIDE_ALERTS | {"EduRankerJobsFailing"}
    for rule in per_index:
        if rule["alert"] in PROCESS_WIDE_ALERTS:
            continue
        assert re.search(r"\bby \((\w+, )*index\b", rule["expr"]), f"{rule['alert']}: not aggregated by index"
        assert "{{ $labels.index }}" in rule["annotations"]["summary"], f"{rule['alert']}: summary names no index"


def test_the_dashboard_filters_every_indexed_figure_by_the_chosen_indexes():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "eduranker.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "label_values(eduranker_" in variables["index"]["definition"]
    assert variables["index"]["multi"] and variables["index"]["includeAll"]
    indexed = _indexed()
    for expr in _dashboard_exprs():
        for found in re.finditer(r"\b([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?", expr):
            if found.group(1) in indexed:
                assert 'index=~"$index"' in (found.group(2) or ""), f"{expr!r}: {found.group(1)} not filtered"


def test_the_dashboard_shows_what_operators_need():
    read = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    for name in ("eduranker_feedback_total", "eduranker_jobs", "eduranker_version_gain", "eduranker_online_likes_total",
                 "eduranker_guard_rollbacks_total", "flower_task_runtime_seconds_bucket"):  # fmt: skip
        assert name in read


@pytest.fixture(scope="module")
def monitoring_config():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is installed by scripts/setup"
    argv = [exe, "--env-file", ".env.example", "-f", "docker-compose.yml", "--profile", "monitoring", "config"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_the_monitoring_profile_validates_and_mounts_deploy(monitoring_config):
    services = monitoring_config["services"]
    for name in ("prometheus", "alertmanager", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    mounts = " ".join(str(v) for name in ("prometheus", "grafana") for v in services[name]["volumes"])
    assert "deploy/prometheus" in mounts and "deploy/grafana/dashboards" in mounts


def test_producer_and_worker_have_health_checks(monitoring_config):
    services = monitoring_config["services"]
    assert "/healthz" in " ".join(services["producer"]["healthcheck"]["test"])
    for name in ("gpu0", "gpu1"):
        assert "inspect ping -d" in " ".join(services[name]["healthcheck"]["test"])
