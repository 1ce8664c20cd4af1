"""The search API's reranker during a challenge: the champion's and the challenger's lists interleaved,
following `models/challenger` as it appears and goes, and the per-position fields the API writes."""

import pytest

from eduranker.models_dir import point_champion, remove_pointer
from eduranker.serving import ChampionReranker
from tests.test_serving import MANY_DOCS, model_folders, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_a_running_challenge_interleaves_every_request_and_names_each_contributor(models):  # noqa: F811
    point_champion(models, "v0001")
    point_champion(models, "v0002", "challenger")
    ranker = ChampionReranker(models, poll_seconds=3600, seed=5, max_length=48)
    try:
        assert ranker.challenger == "v0002"
        results = [ranker.rerank("how do plants make food", MANY_DOCS) for _ in range(10)]
        single = ranker.rerank("q", MANY_DOCS[:1])
        own = {}  # each version's own scores, served alone
        remove_pointer(models, "challenger")
        for version in ("v0001", "v0002"):
            point_champion(models, version)
            assert ranker.refresh() and ranker.version == version
            own[version] = ranker.rerank("how do plants make food", MANY_DOCS).scores
    finally:
        ranker.close()
    for result in results:  # a document's score is the one its contributor gives it alone
        for doc, version in zip(result.order, result.versions, strict=True):
            assert result.scores[doc] == pytest.approx(own[version][doc], abs=1e-5)
    for result in results:
        assert result.interleaved and result.challenger == "v0002" and result.version == "v0001"
        assert sorted(result.order) == list(range(len(MANY_DOCS)))
        assert set(result.versions) == {"v0001", "v0002"}  # team draft: both contribute from two documents on
        fields = result.inference_fields()
        assert [f["rank"] for f in fields] == list(range(1, len(MANY_DOCS) + 1))
        assert [f["model_version"] for f in fields] == result.versions
        assert [f["score"] for f in fields] == [result.scores[d] for d in result.order]
    assert not single.interleaved and single.versions == ["v0001"]  # one document: nothing to interleave


def test_the_reranker_follows_the_challenger_pointer_and_a_share_of_zero_opts_out(models):  # noqa: F811
    point_champion(models, "v0001")
    ranker = ChampionReranker(models, poll_seconds=3600, max_length=48)
    opted_out = None
    try:
        assert not ranker.rerank("q", MANY_DOCS).interleaved and ranker.challenger is None
        point_champion(models, "v0003", "challenger")
        assert ranker.refresh() and ranker.challenger == "v0003"
        assert ranker.rerank("q", MANY_DOCS).challenger == "v0003"
        opted_out = ChampionReranker(models, poll_seconds=3600, max_length=48, challenge_share=0.0)
        assert opted_out.challenger is None and not opted_out.rerank("q", MANY_DOCS).interleaved
        remove_pointer(models, "challenger")  # the challenge ended
        assert ranker.refresh() and ranker.challenger is None
        plain = ranker.rerank("q", MANY_DOCS)
        assert not plain.interleaved and plain.inference_fields()[0]["model_version"] == "v0001"
    finally:
        ranker.close()
        if opted_out is not None:
            opted_out.close()
    with pytest.raises(ValueError, match="challenge_share"):
        ChampionReranker(models, poll_seconds=3600, max_length=48, challenge_share=1.5)


def test_the_info_endpoint_names_the_challenger_being_interleaved(models):  # noqa: F811
    from eduranker.api.model_info import ServingInfo

    point_champion(models, "v0001")
    ranker = ChampionReranker(models, poll_seconds=3600, max_length=48)
    try:
        info = ServingInfo(ranker)
        assert info.describe()["challenge"] is None
        point_champion(models, "v0002", "challenger")
        assert ranker.refresh()
        challenge = info.describe()["challenge"]
        assert challenge["version"] == "v0002" and challenge["share"] == 1.0
    finally:
        ranker.close()
