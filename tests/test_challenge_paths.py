"""Each way a challenge ends, on a real SecantusDB with version folders on disk: promoted, rejected,
capped, replaced by a newer candidate, voided by a champion changed meanwhile, decided offline where no
search was interleaved; and a decision applied only to the state it judged."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from eduranker import champion, models_dir
from eduranker.errors import ChampionChanged
from eduranker.records import ChallengeOutcome
from eduranker.store import challenge, versions
from eduranker.store.connection import CHAMPION_RECORD, MODEL_VERSIONS
from producer.challenge import Action, ChallengeRule
from producer.challenge_refresh import judge, refresh_challenge
from tests.challenge_traffic import write_interleaved

pytestmark = pytest.mark.integration


@pytest.fixture()
def isettings(settings):
    return settings.with_overrides(promotion_mode="interleave")


@pytest.fixture()
def challenged(registry, isettings):
    """v0001 champion, v0002 its challenger."""
    champion.promote(registry, isettings.models_dir, "v0001", by="test", reason="first")
    champion.start_challenge(registry, isettings.models_dir, "v0002", against="v0001", by="test", reason="screened")
    return registry


def pointer(s, name: str) -> str | None:
    return models_dir.champion_target(s.models_dir, name)


def status(db, version: str) -> str:
    return versions.get_version(db, version)["status"]


def test_a_challenge_starts_from_the_champion_it_was_judged_against(challenged, isettings):
    record, running = challenge.read(challenged)
    assert record.version == "v0001" and running is not None and running.version == "v0002"
    assert running.against == "v0001" and running.seq == record.seq
    assert status(challenged, "v0002") == "challenger"
    assert pointer(isettings, "challenger") == "v0002" and pointer(isettings, "champion") == "v0001"
    # A candidate judged against another champion does not become the challenger.
    with pytest.raises(ChampionChanged):
        champion.start_challenge(challenged, isettings.models_dir, "v0003", against=None, by="t", reason="r")
    assert challenge.read(challenged)[1].version == "v0002"  # type: ignore[union-attr]


def test_users_preferring_the_challenger_promote_it(challenged, isettings):
    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.85, p_champion=0.25)
    done = refresh_challenge(challenged, isettings)
    assert done is not None and done.applied and done.decision.action is Action.PROMOTE
    record, running = challenge.read(challenged)
    assert (record.version, record.chain, running) == ("v0002", ["v0001", "v0002"], None)
    assert status(challenged, "v0002") == "champion" and status(challenged, "v0001") == "retired"
    assert pointer(isettings, "champion") == "v0002" and pointer(isettings, "challenger") is None
    assert pointer(isettings, "previous") == "v0001"
    ended = versions.get_version(challenged, "v0002")["challenge"]
    assert ended["outcome"] == ChallengeOutcome.PROMOTED and ended["figures"]["low"] > 0
    assert "users prefer the challenger" in ended["reason"]


def test_users_preferring_the_champion_reject_the_challenger(challenged, isettings):
    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.25, p_champion=0.85)
    done = refresh_challenge(challenged, isettings)
    assert done is not None and done.applied and done.decision.action is Action.REJECT
    record, running = challenge.read(challenged)
    assert record.version == "v0001" and running is None
    assert status(challenged, "v0002") == "rejected" and status(challenged, "v0001") == "champion"
    assert pointer(isettings, "challenger") is None
    assert versions.get_version(challenged, "v0002")["challenge"]["outcome"] == ChallengeOutcome.REJECTED


def test_no_decision_by_the_cap_ends_the_challenge_and_the_champion_stays(challenged, isettings):
    capped = isettings.with_overrides(challenge_max_impressions=100)
    write_interleaved(challenged, "v0001", "v0002", users=60, per_user=2, p_challenger=0.5, p_champion=0.5, seed=4)
    done = refresh_challenge(challenged, capped)
    assert done is not None and done.applied and done.decision.action is Action.CAP
    assert challenge.read(challenged)[0].version == "v0001"
    assert versions.get_version(challenged, "v0002")["challenge"]["outcome"] == ChallengeOutcome.CAPPED


def test_too_little_evidence_waits_and_keeps_the_running_figures(challenged, isettings):
    write_interleaved(challenged, "v0001", "v0002", users=30, p_challenger=0.9, p_champion=0.1)
    done = refresh_challenge(challenged, isettings)
    assert done is not None and not done.applied and done.decision.action is Action.WAIT
    figures = versions.get_version(challenged, "v0002")["challenge"]["figures"]
    assert figures["impressions"] == 60 and "waiting for 100 users" in figures["decision"]
    assert challenge.read(challenged)[1] is not None


def test_a_newer_screened_candidate_replaces_the_challenger_and_the_test_restarts(challenged, isettings):
    first = challenge.read(challenged)[1]
    replaced = champion.start_challenge(challenged, isettings.models_dir, "v0003", against="v0001", by="job j3",
                                        reason="screened")  # fmt: skip
    assert replaced == "v0002"
    running = challenge.read(challenged)[1]
    assert running is not None and running.version == "v0003" and running.id != first.id  # type: ignore[union-attr]
    assert status(challenged, "v0002") == "rejected" and status(challenged, "v0003") == "challenger"
    assert versions.get_version(challenged, "v0002")["challenge"]["outcome"] == ChallengeOutcome.REPLACED
    assert pointer(isettings, "challenger") == "v0003"


def test_a_champion_changed_meanwhile_voids_the_challenge(challenged, isettings):
    champion.promote(challenged, isettings.models_dir, "v0003", by="cli", reason="by hand")
    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.9, p_champion=0.1)
    done = refresh_challenge(challenged, isettings)
    assert done is not None and done.applied
    record, running = challenge.read(challenged)
    assert record.version == "v0003" and running is None
    assert status(challenged, "v0002") == "rejected"
    assert versions.get_version(challenged, "v0002")["challenge"]["outcome"] == ChallengeOutcome.VOID


def test_a_decision_is_applied_only_to_the_state_it_judged(challenged, isettings):
    """Judged (promote v0002 over v0001), then v0003 promoted by hand before the write: the promotion
    changes nothing; the next look voids the challenge."""
    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.9, p_champion=0.1)
    record, seen = challenge.read(challenged)
    assert seen is not None
    decision = judge(challenged, seen, isettings.config(ChallengeRule), seen.started_at + timedelta(minutes=5))
    assert decision.action is Action.PROMOTE
    champion.promote(challenged, isettings.models_dir, "v0003", by="cli", reason="by hand")
    with pytest.raises(ChampionChanged):
        ending = challenge.Ending(True, ChallengeOutcome.PROMOTED, decision.reason, decision.figures)
        champion.end_challenge(challenged, isettings.models_dir, seen, ending, by="challenge")
    assert challenge.read(challenged)[0].version == "v0003"
    assert status(challenged, "v0002") == "challenger" and pointer(isettings, "champion") == "v0003"
    assert refresh_challenge(challenged, isettings).applied  # type: ignore[union-attr]
    assert challenge.read(challenged)[0].version == "v0003" and status(challenged, "v0002") == "rejected"


@pytest.mark.parametrize("offline_promote", [True, False])
def test_no_interleaved_search_falls_back_to_the_offline_gate(challenged, isettings, offline_promote):
    challenged[MODEL_VERSIONS].update_one({"version": "v0002"}, {"$set": {"gate.promote": offline_promote}})
    running = challenge.read(challenged)[1]
    # Started two hours ago (the server's clock): past CHALLENGE_FALLBACK_SECONDS with nothing interleaved.
    challenged[CHAMPION_RECORD].update_one(
        {"_id": "current"},
        {"$set": {"challenge.started_at": running.started_at - timedelta(hours=2)}},  # type: ignore[union-attr]
    )
    done = refresh_challenge(challenged, isettings)
    assert done is not None and done.applied and done.decision.action is Action.OFFLINE
    assert challenge.read(challenged)[0].version == ("v0002" if offline_promote else "v0001")
    ended = versions.get_version(challenged, "v0002")["challenge"]
    assert ended["outcome"] == ChallengeOutcome.OFFLINE and "decided offline" in ended["reason"]
    from console.challenge_view import status_lines

    assert status_lines(challenged)[0].startswith("last challenge: v0002 decided offline")


def test_a_first_model_is_challenged_against_the_base_model(registry, isettings):
    champion.start_challenge(registry, isettings.models_dir, "v0001", against=None, by="job", reason="screened")
    write_interleaved(registry, None, "v0001", users=150, p_challenger=0.85, p_champion=0.25)
    done = refresh_challenge(registry, isettings)
    assert done is not None and done.applied and done.decision.action is Action.PROMOTE
    assert challenge.read(registry)[0].version == "v0001" and pointer(isettings, "champion") == "v0001"
    assert Path(isettings.models_dir, "champion").resolve().name == "v0001"


def test_anonymous_searches_are_clustered_so_a_flood_cannot_reach_the_user_floor(challenged, isettings):
    """500 anonymous searches in one hour, all preferring the challenger: one cluster, so no decision."""
    write_interleaved(challenged, "v0001", "v0002", users=500, per_user=1, p_challenger=1.0, p_champion=0.0,
                      anonymous=True)  # fmt: skip
    done = refresh_challenge(challenged, isettings)
    assert done is not None and done.decision.action is Action.WAIT
    assert "waiting for 100 users" in done.decision.reason


def test_an_operator_ends_a_challenge_by_hand(challenged, isettings, capsys):
    from console import cli

    write_interleaved(challenged, "v0001", "v0002", users=30, p_challenger=0.6, p_champion=0.5)
    refresh_challenge(challenged, isettings)
    assert cli.main(["status"], settings=isettings) == 0
    out = capsys.readouterr().out
    assert "challenge: v0002 vs v0001 since" in out and "waiting for 100 users" in out
    assert cli.main(["reject", "v0003"], settings=isettings) == 1  # not the challenger: nothing changes
    assert cli.main(["promote", "v0002", "--reason", "looks right"], settings=isettings) == 0
    assert "its challenge ended by hand" in capsys.readouterr().out
    assert challenge.read(challenged)[0].version == "v0002" and pointer(isettings, "challenger") is None
    ended = versions.get_version(challenged, "v0002")["challenge"]
    assert (ended["outcome"], ended["reason"]) == (ChallengeOutcome.BY_HAND, "looks right")
    champion.start_challenge(challenged, isettings.models_dir, "v0003", against="v0002", by="t", reason="r")
    assert cli.main(["reject"], settings=isettings) == 0
    assert challenge.read(challenged)[0].version == "v0002" and status(challenged, "v0003") == "rejected"
    assert cli.main(["versions"], settings=isettings) == 0
    out = capsys.readouterr().out
    assert "v0002 challenge by_hand: looks right" in out and "v0003 challenge by_hand" in out
    assert cli.main(["reject"], settings=isettings) == 1  # no challenge running


def test_the_metrics_show_the_running_challenge_and_each_outcome(challenged, isettings):
    from producer.metrics import families, read

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = {}
        for family in families(read(challenged, isettings), "test"):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    write_interleaved(challenged, "v0001", "v0002", users=110, p_challenger=0.6, p_champion=0.55, seed=9)
    assert not refresh_challenge(challenged, isettings).applied  # type: ignore[union-attr]
    running = samples()
    assert running[("eduranker_challenge_info", (("challenger", "v0002"), ("champion", "v0001")))] == 1
    low = running[("eduranker_challenge_credit", (("bound", "low"), ("challenger", "v0002")))]
    high = running[("eduranker_challenge_credit", (("bound", "high"), ("challenger", "v0002")))]
    assert low < 0 < high
    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.9, p_champion=0.1, seed=10)
    assert refresh_challenge(challenged, isettings).applied  # type: ignore[union-attr]
    ended = samples()
    assert not any(name == "eduranker_challenge_info" for name, _ in ended)
    assert ended[("eduranker_challenges_total", (("outcome", "promoted"),))] == 1
    assert ended[("eduranker_challenges_total", (("outcome", "rejected"),))] == 0


def test_a_producer_paused_between_judging_and_writing_changes_nothing_when_the_champion_moved(
    challenged, isettings, tmp_path
):
    """A real process looks at the challenge, judges "promote v0002", and is stopped (SIGSTOP) at its
    first write of the champion record; an operator promotes v0003 meanwhile. Resumed, its write finds
    another state: v0003 stays champion, v0002 is not promoted, and the next look voids the challenge."""
    from tests.test_guard_decisions import run_paused

    write_interleaved(challenged, "v0001", "v0002", users=150, p_challenger=0.9, p_champion=0.1)
    by_hand = lambda: champion.promote(challenged, isettings.models_dir, "v0003", by="cli", reason="by hand")  # noqa: E731
    log = run_paused(isettings, "challenge", tmp_path / "challenge.log", by_hand)
    assert "decision: users prefer the challenger" in log and "applied: False" in log, log
    assert challenge.read(challenged)[0].version == "v0003" and pointer(isettings, "champion") == "v0003"
    assert status(challenged, "v0002") == "challenger"  # judged on a state that is gone: nothing applied
    assert refresh_challenge(challenged, isettings).applied  # type: ignore[union-attr]
    assert status(challenged, "v0002") == "rejected"
    assert versions.get_version(challenged, "v0002")["challenge"]["outcome"] == ChallengeOutcome.VOID
