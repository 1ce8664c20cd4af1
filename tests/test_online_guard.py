"""Live like rates per version and the online guard that rolls back a champion users like less."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from bson import ObjectId

from eduranker import champion, cli
from eduranker.settings import Settings
from eduranker.store import ensure_indexes, versions
from producer.guard import LiveRate, judge, one_sided_p
from producer.online import refresh_online
from tests.fake_versions import make_version


@pytest.mark.parametrize(
    "champion_likes,holdback_likes,n,rollback,reason",
    [
        (90, 130, 200, True, "significantly worse"),  # 0.45 vs 0.65
        (120, 130, 200, False, "no significant difference"),  # 0.60 vs 0.65: within the noise at 0.99
        (130, 130, 200, False, "no significant difference"),
        (150, 100, 200, False, "no significant difference"),  # better is never rolled back
        (40, 90, 150, False, "waiting for 200 feedbacks each"),
    ],
)
def test_guard_table(champion_likes, holdback_likes, n, rollback, reason):
    decision = judge(LiveRate("v2", n, champion_likes), LiveRate("v1", n, holdback_likes),
                     min_feedback=200, confidence=0.99)  # fmt: skip
    assert decision.rollback is rollback and reason in decision.reason


def test_without_holdback_the_guard_only_reports():
    decision = judge(LiveRate("v2", 5000, 10), None, min_feedback=200, confidence=0.99)
    assert not decision.rollback and "reporting only" in decision.reason


def test_the_p_value_matches_a_simulation_under_equal_rates():
    rng = np.random.default_rng(0)
    ps = [one_sided_p(LiveRate("a", 300, rng.binomial(300, 0.6)), LiveRate("b", 300, rng.binomial(300, 0.6)))
          for _ in range(4000)]  # fmt: skip
    assert abs(np.mean(np.array(ps) < 0.05) - 0.05) < 0.015  # the test holds its level
    assert LiveRate("a", 200, 120).wilson(0.95) == pytest.approx((0.531, 0.665), abs=0.002)


def _serve(db, version, n, like_rate, rng, at):
    docs = []
    for _ in range(n):
        doc = {"query_id": ObjectId(), "resource_id": ObjectId(), "model_version": version, "created_at": at}
        if rng.random() < 0.8:  # most results get a reaction here, to keep the test small
            doc["feedback"] = "like" if rng.random() < like_rate else "dislike"
        docs.append(doc)
    db.inferences.insert_many(docs)


@pytest.fixture()
def promoted(db, settings):
    ensure_indexes(db)
    for v in ("v0001", "v0002"):
        make_version(settings.models_dir, v)
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}"})
    champion.promote(db, settings.models_dir, "v0001", by="test", reason="test")
    champion.promote(db, settings.models_dir, "v0002", by="test", reason="test")
    return versions.get_version(db, "v0002")["promoted_at"]


@pytest.mark.integration
def test_a_champion_users_like_clearly_less_is_rolled_back_with_its_figures(db, settings, promoted):
    rng = np.random.default_rng(1)
    after = promoted + timedelta(seconds=1)
    _serve(db, "v0001", 400, 0.25, rng, promoted - timedelta(days=1))  # before the promotion: not counted
    _serve(db, "v0002", 400, 0.45, rng, after)
    _serve(db, "v0001", 400, 0.70, rng, after)  # the holdback
    decision = refresh_online(db, settings)
    assert decision is not None and decision.rollback
    assert versions.read_champion(db).version == "v0001"
    demoted = versions.get_version(db, "v0002")
    assert demoted["status"] == "rolled_back" and demoted["guard_rolled_back"]
    assert "like rate v0002" in demoted["rollback_reason"] and "holdback v0001" in demoted["rollback_reason"]
    assert demoted["online"]["holdback"]["feedback"] == pytest.approx(320, abs=40)
    assert demoted["history"][-1]["by"] == "online guard"
    with pytest.raises(Exception, match="online guard"):  # never promoted again automatically
        versions.promote(db, "v0002", by="job x", reason="x", expected_champion="v0001")


@pytest.mark.integration
def test_equal_like_rates_change_nothing(db, settings, promoted, capsys):
    rng = np.random.default_rng(2)
    after = promoted + timedelta(seconds=1)
    _serve(db, "v0002", 400, 0.6, rng, after)
    _serve(db, "v0001", 400, 0.6, rng, after)
    decision = refresh_online(db, settings)
    assert decision is not None and not decision.rollback
    v2 = versions.get_version(db, "v0002")
    assert versions.read_champion(db).version == "v0002" and v2["status"] == "champion"
    low, high = v2["online"]["like_rate_interval"]
    assert low < v2["online"]["like_rate"] < high and v2["online"]["served"] == 400
    cli.main(["versions"], settings)
    table = capsys.readouterr().out
    assert f"{v2['online']['like_rate']:.2f} [{low:.2f},{high:.2f}] of {v2['online']['feedback']}" in table


@pytest.mark.integration
def test_with_the_guard_off_it_only_reports(db, settings, promoted):
    rng = np.random.default_rng(3)
    after = promoted + timedelta(seconds=1)
    _serve(db, "v0002", 400, 0.3, rng, after)
    _serve(db, "v0001", 400, 0.8, rng, after)
    decision = refresh_online(db, Settings(**{**settings.__dict__, "online_guard": False}))
    assert decision is not None and decision.rollback  # it would, but does not
    assert versions.read_champion(db).version == "v0002"
    assert datetime.now(UTC) > promoted
