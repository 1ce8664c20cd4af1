"""A training job's pipeline, as numbered steps: each a named stage in `worker.stages`.

1 snapshot → 2 split → 3 judge the champion → 4 fine-tune → 5 judge the candidate
→ 6 gate → 7 write the version aside → 8 register (and make it the challenger, or promote it, by
compare-and-set)

The split's key is read first: the snapshot reads newest first and stops once each side of the split
holds what the caps (TRAIN_MAX_PAIRS, GATE_MAX_PAIRS) can use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from eduranker import champion
from eduranker.errors import ChampionChanged
from eduranker.pipeline import artifacts
from eduranker.pipeline.device import configure_threads, describe, select_device
from eduranker.pipeline.gate import GateDecision, GateRule, decide_promotion
from eduranker.pipeline.model_io import save_cross_encoder
from eduranker.pipeline.report import render_report, write_plots
from eduranker.pipeline.training import TrainConfig
from eduranker.pipeline.variant_io import build_variant
from eduranker.settings import Settings
from eduranker.store import jobs, versions
from eduranker.store.types import Db
from worker import fenced, metadata
from worker.run import Run
from worker.stages import (
    comparisons,
    fine_tune_candidate,
    judge_candidate,
    judge_champion,
    plot_inputs,
    split_for_judging,
    split_key,
    take_snapshot,
)

log = logging.getLogger(__name__)
INTERLEAVE = "interleave"  # PROMOTION_MODE: users decide between a screened candidate and the champion


@dataclass
class Laps:
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        self.timings[name] = round(time.perf_counter() - self.started, 3)
        self.started = time.perf_counter()


def train_and_register(db: Db, s: Settings, run: Run) -> dict[str, Any]:
    """Run every stage of job `run.job_id`; returns the fields of its outcome for `training_jobs`."""
    laps = Laps()
    rule, config = s.config(GateRule), s.config(TrainConfig)  # each concern's config, built once per job
    run.progress("snapshot")
    key = split_key(db, s, run.job_id)  # the split's key, before the snapshot that reads up to its caps
    snapshot = take_snapshot(db, s, run, key)  # 1
    split = split_for_judging(snapshot, s, run, rule, key)  # 2
    laps.lap("snapshot")

    threads = configure_threads(s.torch_threads)
    device = select_device()
    run.update("recording the device", device=describe(device))
    run.progress("evaluate_before")
    baseline = judge_champion(db, s, split, device, rule)  # 3
    laps.lap("evaluate_before")

    candidate = fine_tune_candidate(s, split, baseline, device, run, config)  # 4
    laps.lap("train")

    run.progress("evaluate_after")
    judged = judge_candidate(candidate, s, split, baseline, device)  # 5
    heldout, reference = comparisons(split, baseline, judged)
    decision = decide_promotion(heldout, rule, reference, baseline.fairness)  # 6
    laps.lap("evaluate_after")

    run.progress("write_artifacts")
    version = versions.allocate_version(db)  # 7
    meta = metadata.build(version, run.job_id, s, snapshot, split, baseline, judged, candidate, decision,
                          device=describe(device), threads=threads, timings=laps.timings)  # fmt: skip
    with artifacts.staged_version_dir(s.models_dir, version, private_gid=s.models_gid) as folder:
        save_cross_encoder(candidate.model, candidate.tokenizer, folder, s.max_length)
        meta["serving_variant"] = build_variant(candidate.model, folder, s.serving_variant)  # served, never converted
        artifacts.write_heldout_pairs(folder, split.test)
        meta["plots"] = write_plots(folder, **plot_inputs(snapshot, split, baseline, judged))
        laps.lap("write_artifacts")
        metadata.write(folder, meta)
        (folder / "training_report.txt").write_text(render_report(meta))

    return register(db, s, run, meta, decision, baseline.champion_version)  # 8


def register(
    db: Db, s: Settings, run: Run, meta: dict[str, Any], decision: GateDecision, judged_against: str | None
) -> dict[str, Any]:
    """Register the version, then act on the gate: with PROMOTION_MODE=interleave a candidate that passes
    the screen becomes the challenger (users decide, producer/challenge.py), with "offline" the gate
    promotes; either only if the champion is still the one it was judged against.

    A fenced write before each side effect (worker/fenced.py): it proves this run still owns the job and
    refreshes its heartbeat, so no other attempt can take the job over for `job_stale_after_s`, far
    longer than the write that follows. A run superseded at either point withdraws its folder and
    document and stops."""
    version = meta["version"]
    fenced.prove_owner(db, s, run, version, "register", inserted=False)
    versions.insert_version(db, metadata.registry_doc(meta), by=f"job {run.job_id}")
    by = f"job {run.job_id}"
    challenged = s.promotion_mode == INTERLEAVE
    admitted, reason = (decision.screened, decision.reason) if challenged else (decision.promote, decision.reason)
    if admitted:
        fenced.prove_owner(db, s, run, version, "promote", inserted=True)
        try:
            if challenged:
                replaced = champion.start_challenge(db, s.models_dir, version, against=judged_against, by=by,
                                                    reason=f"passed the screen: {decision.reason}")  # fmt: skip
                reason = f"challenger{f' (replaces {replaced})' if replaced else ''}; passed the screen: {reason}"
            else:
                champion.promote(db, s.models_dir, version, by=by, reason=decision.reason,
                                 expected_champion=judged_against)  # fmt: skip
        except ChampionChanged as exc:
            admitted, reason = False, str(exc)
    elif challenged:
        reason = f"kept from users by the screen: {reason}"
    if not admitted:
        versions.set_status(db, version, versions.REJECTED, by=by, reason=reason)
    promoted = admitted and not challenged
    what = ("challenger" if challenged else "champion") if admitted else "rejected"
    log.info("job %s → %s (%s): %s", run.job_id, version, what, reason)
    return {
        "job_status": jobs.SUCCEEDED if admitted else jobs.REJECTED,
        "version": version,
        "promoted": promoted,
        "challenger": admitted and challenged,
        "reason": None if promoted else reason,
        "gate_reason": decision.reason,
        "gate_refused": decision.refused,
        # The gate's intervals are the version's (`model_versions.gate.intervals`): not copied here.
        "metrics": meta["metrics"],
        "batch_size_used": meta["hyperparameters"]["batch_size"],
        "oom_retries": meta["oom_retries"],
        "timings": meta["timings"],
        "artifact_path": meta["artifact_path"],
    }
