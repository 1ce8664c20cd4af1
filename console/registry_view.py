"""How `eduranker status` and `eduranker versions` show the registry: the versions table, live like
rates, the guard's comparison and decisions, the housekeeping duties' state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eduranker.indexes import describe_claim
from eduranker.records import VersionDoc
from eduranker.settings import Settings
from eduranker.store import jobs, versions
from eduranker.store.feedback import count_labels
from eduranker.store.types import Db, for_index


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_housekeeping(db: Db) -> None:
    """The producer's housekeeping duties that are failing now (producer/duties.py), or that all work."""
    from producer.duties import describe_failures
    from producer.state import load_state

    state = load_state(db)
    failing = describe_failures(state.get("duties"))
    if not state.get("duties"):
        print("housekeeping: not reported yet")
    elif not failing:
        print("housekeeping: every duty ok")
    else:
        print(f"housekeeping: {len(failing)} failing")
    for line in failing:
        print(f"  {line}")
    if state.get("loop_failures"):
        print(f"  producer loop: {state['loop_failures']} refused or failed watches, last: {state.get('loop_error')}")


def live(online: dict[str, Any] | None) -> str:
    """Like rate with its Wilson interval, from the producer's last refresh."""
    if not online or not online.get("feedback"):
        return "-"
    low, high = online["like_rate_interval"]
    return f"{online['like_rate']:.2f} [{low:.2f},{high:.2f}] of {online['feedback']}"


def print_comparison(online: dict[str, Any]) -> None:
    """The guard's running comparison (producer.guard.describe), unless its reason already says it."""
    from producer.guard import describe

    line = describe(online["comparison"]) if online.get("comparison") else None
    if line and line not in (online.get("guard") or ""):
        print(f"  comparison: {line}")


def guard_lines(rows: list[VersionDoc]) -> None:
    """Every online-guard decision with its figures, and the champion's running comparison."""
    for v in rows:
        for decision in v.get("guard_decisions") or []:
            print(f"{v['version']} rolled back by the online guard: {decision.get('reason')}")
        if v.get("status") == versions.CHAMPION and (v.get("online") or {}).get("guard"):
            print(f"{v['version']} online guard: {v['online']['guard']}")


def _interval(v: VersionDoc) -> str:
    """The gate's interval of the primary metric's change: `gate.intervals` (older versions: `metrics.intervals`)."""
    from eduranker.pipeline.evaluation import METRICS
    from eduranker.pipeline.report import stored_intervals

    found: Mapping[str, Any] = stored_intervals(v).get(METRICS.primary.name) or {}
    if found.get("low") is None:
        return "-"
    return f"[{found['low']:+.3f},{found['high']:+.3f}]"


def versions_header() -> str:
    """The gate's metric, its change and interval, then each metric the registry gives a column."""
    from eduranker.pipeline.evaluation import METRICS

    columns = "".join(f"{m.name:>{max(7, len(m.name) + 1)}}" for m in METRICS.columns)
    primary = f"{METRICS.primary.name:>8}{'Δ auc':>8}{'95% CI of Δ':>17}"
    return f"{'version':<9}{'status':<11}{primary}{columns}{'pairs':>7}  created"


def version_row(v: VersionDoc) -> str:
    """One version under `versions_header`."""
    from eduranker.pipeline.evaluation import METRICS

    primary = METRICS.primary.name
    after, before = (v.get("metrics") or {}).get("after") or {}, (v.get("metrics") or {}).get("before") or {}
    gain = None if after.get(primary) is None or before.get(primary) is None else after[primary] - before[primary]
    created = f"{v['created_at']:%Y-%m-%d %H:%M}" if v.get("created_at") else "-"
    status = v["status"] + ("*" if v.get("forced") else "")
    columns = "".join(f"{fmt(after.get(m.name)):>{max(7, len(m.name) + 1)}}" for m in METRICS.columns)
    return (
        f"{v['version']:<9}{status:<11}{fmt(after.get(primary)):>8}"
        f"{('-' if gain is None else f'{gain:+.3f}'):>8}{_interval(v):>17}{columns}"
        f"{fmt(v.get('snapshot', {}).get('pairs')):>7}  {created}"
    )


def print_slices(v: VersionDoc) -> None:
    """The gate's per-slice ROC-AUC changes under the version's row, where it judged slices."""
    slices = (v.get("gate") or {}).get("slices") or {}
    shown = [
        f"{name} {found['delta']:+.3f} [{found['low']:+.3f}, {found['high']:+.3f}]"
        for name, found in slices.items()
        if found.get("low") is not None
    ]
    if shown:
        print("    slices (Δ auc): " + "; ".join(shown))


def print_indexes(db: Db, settings: Settings) -> None:
    """Every configured index (`eduranker indexes`): what it owns, its queue and folder, its feedback,
    champion and unfinished jobs. `settings`: the process's, not one index's."""
    for index in settings.each_index():
        spec, own = index.index_spec, for_index(db, index.index_spec)
        totals = count_labels(own)
        record = versions.read_champion(own)
        active = jobs.unfinished_jobs(own)
        print(f"{spec.name}: {describe_claim(spec)}")
        print(f"  queue {spec.queue}, models {index.models_dir}, base {index.base_model_name}")
        print(f"  feedback {sum(totals.values())} (like {totals['like']}, dislike {totals['dislike']}); champion "
              f"{record.version or 'none (the base model)'}; jobs unfinished {len(active)}")  # fmt: skip
