"""INDEXES: what an index may say, each problem one line naming it, and claims that mean the same
thing in Python (the snapshot) and in MongoDB (the producer's counts)."""

import json
import random
import subprocess
import sys

import pytest
from pymongo import MongoClient

from eduranker.indexes import DEFAULT, Claim, Condition, disjoint
from eduranker.settings import Settings, SettingsError
from eduranker.store.feedback import claimed
from tests.celery_worker import ROOT

FR = {"owns": {"query.index": "fr"}}
EN = {"owns": {"query.index": ["en", None]}}


def indexes(config: dict) -> Settings:
    return Settings(indexes=json.dumps(config))


def test_nothing_configured_is_one_default_index_owning_all_feedback_with_todays_names():
    (only,) = Settings().all_indexes
    assert only.name == DEFAULT and only.claim.everything
    assert (only.collection("training_jobs"), only.named("v0003"), only.queue) == ("training_jobs", "v0003", "training")
    assert only.models_dir("/m") == "/m" and only.base_tag == {}


def test_each_index_is_named_in_its_collections_versions_queue_folder_and_settings():
    s = indexes({"fr": {**FR, "TRAIN_MIN_FEEDBACK": 50, "BASE_LANGUAGE": "fr"}, "en": EN})
    assert [i.name for i in s.all_indexes] == ["default", "en", "fr"]
    fr = s.for_index("fr")
    spec = fr.index_spec
    assert (spec.collection("model_versions"), spec.named("v0001"), spec.queue) == (
        "fr.model_versions", "fr-v0001", "training.fr")  # fmt: skip
    assert fr.models_dir == "models/fr" and fr.models_root == "models"
    assert fr.train_min_feedback == 50 and s.for_index("en").train_min_feedback == s.train_min_feedback
    assert fr.base_model_name != s.base_model_name  # BASE_LANGUAGE fr picks the French default base
    # The default index owns what no other claims.
    assert s.index_spec.claim.holds({"index": "de"}, {}) and not s.index_spec.claim.holds({"index": "fr"}, {})
    assert not s.index_spec.claim.holds({}, {})  # a query without `index` is en's (null claimed)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"fr": {}}, "INDEXES[fr]: no `owns`"),
        ({"Fr": FR}, "bad index name 'Fr'"),
        ({"champion": FR}, "a name the models folder uses"),
        ({"v12": FR}, "a name the models folder uses"),
        ({"system": FR}, "a name the models folder uses"),  # MongoDB's own `system.` collections
        ({"fr": {**FR, "TRAIN_MIN_FEEDBAK": 3}}, "INDEXES[fr]: unknown field 'TRAIN_MIN_FEEDBAK'"),
        ({"fr": {**FR, "MONGODB_URL": "mongodb://x"}}, "MONGODB_URL is a setting of the whole process"),
        ({"fr": {**FR, "TRAIN_MIN_FEEDBACK": "many"}}, "INDEXES[fr].TRAIN_MIN_FEEDBACK='many': expected a whole"),
        ({"fr": {**FR, "TEST_FRACTION": 0.9}}, "INDEXES[fr].TEST_FRACTION=0.9"),
        ({"fr": {"owns": {"query.query_text": "x"}}}, "cannot claim feedback"),
        ({"fr": {"owns": {"user.index": "fr"}}}, "is not query.<field> or resource.<field>"),
        ({"fr": {"owns": {"query.index": []}}}, "a non-empty list of values"),
        ({"fr": {"owns": {"query.index": {"$ne": 1}}}}, "a non-empty list of values"),
        ({"fr": FR, "fr2": {"owns": {"query.index": ["fr", "be"]}}}, "fr and fr2 claim the same feedback"),
        ({"fr": FR, "x": {"owns": {"resource.language": "fr"}}}, "fr and x claim the same feedback"),
        ({"default": {"owns": {"query.index": ["fr", "de"]}}, "fr": FR}, "default and fr claim the same feedback"),
        ([1], "expected a JSON object"),
    ],
)
def test_a_bad_index_configuration_is_one_line_naming_it(config, problem):
    with pytest.raises(SettingsError, match=None) as raised:
        indexes(config).all_indexes  # noqa: B018 - the property parses and checks
    assert problem in str(raised.value) and "\n" not in str(raised.value)


def test_an_indexes_settings_never_derive_another_indexes():
    """The default index's own values (here a French base and a threshold) must not leak into en's."""
    s = indexes({"default": {"TRAIN_MIN_FEEDBACK": 5, "BASE_LANGUAGE": "fr"}, "en": EN})
    assert s.for_index("en").train_min_feedback == s.train_min_feedback
    assert s.for_index("en").base_model_name == s.base_model_name
    with pytest.raises(ValueError, match="settings already for index 'default'"):
        s.for_index("default").for_index("en")


def test_claims_that_share_a_field_with_disjoint_values_never_overlap():
    a, b = Condition("query", "index", ("a",)), Condition("query", "index", ("b", None))
    lang = Condition("resource", "language", ("fr",))
    assert disjoint([a], [b]) and disjoint([a, lang], [b])
    assert not disjoint([a], [lang]) and not disjoint([lang], [lang]) and not disjoint([], [a])


@pytest.mark.integration
def test_a_claim_owns_the_same_feedback_in_python_and_in_mongodb(mongo_server_url):
    """The snapshot keeps rows by `Claim.holds`, the producer counts them with `claimed`'s stages: on
    random searches and results (fields missing, null, arrays, numbers; dangling references) the two
    agree, for a claim, its complement (the default index's) and a two-source claim."""
    rng = random.Random(3)
    values = ["a", "b", None, 3, 3.0, True, 1, ["a", "c"]]
    client: MongoClient = MongoClient(mongo_server_url)
    db = client[f"claims_{rng.randrange(10**9)}"]
    try:
        queries, resources = [], []
        for i in range(40):
            doc = {"_id": i, "query_text": "q"}
            if rng.random() < 0.8:
                doc["index"] = rng.choice(values)
            queries.append(doc)
            res = {"_id": i, "title": "t"}
            if rng.random() < 0.7:
                res["language"] = rng.choice(["fr", "en", None])
            resources.append(res)
        db.user_queries.insert_many(queries)
        db.resources.insert_many(resources)
        # ids 40-44 dangle: no such search or result
        db.inferences.insert_many([{"_id": n, "query_id": rng.randrange(45), "resource_id": rng.randrange(45),
                                    "feedback": "like"} for n in range(300)])  # fmt: skip
        by_query = {d["_id"]: d for d in queries}
        by_resource = {d["_id"]: d for d in resources}
        a = (Condition("query", "index", ("a",)),)
        b = (Condition("query", "index", ("b", None, 1)), Condition("resource", "language", ("fr", None)))
        for claim in (Claim(a), Claim(b), Claim(exclude=(a, b))):
            found = {d["_id"] for d in db.inferences.aggregate([*claimed(claim), {"$project": {"_id": 1}}])}
            held = {
                d["_id"]
                for d in db.inferences.find()
                if claim.holds(by_query.get(d["query_id"]), by_resource.get(d["resource_id"]))
            }
            assert found == held and 0 < len(held) < 300, claim
    finally:
        client.drop_database(db.name)
        client.close()


@pytest.mark.parametrize("command", [["-m", "producer"], ["-m", "console.cli", "status"]])
def test_a_bad_index_configuration_stops_a_process_with_one_line_and_exit_2(command):
    env = {"PATH": "/usr/bin:/bin", "INDEXES": json.dumps({"fr": FR, "x": {"owns": {"resource.language": "fr"}}})}
    out = subprocess.run([sys.executable, *command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["invalid setting: INDEXES: fr and x claim the same feedback (their "
                                               "owns must differ in a field both name)"]  # fmt: skip


def test_an_unknown_index_on_the_command_line_is_a_usage_error():
    env = {"PATH": "/usr/bin:/bin", "INDEXES": json.dumps({"fr": FR})}
    out = subprocess.run([sys.executable, "-m", "console.cli", "--index", "de", "status"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "index 'de' is not configured (INDEXES names: default, fr)" in out.stderr


@pytest.mark.integration
def test_an_indexes_live_impressions_leave_another_indexes_base_results_out(mongo_server_url):
    """Before their first champions both indexes serve the base model (`model_version` null): the
    impressions index a compares are its searches, told apart by the `index` its reranker writes."""
    from datetime import UTC, datetime, timedelta

    from eduranker.store.online import impression_rows
    from eduranker.store.types import IndexDb

    two = {"a": {"owns": {"query.index": "a"}}, "b": {"owns": {"query.index": "b"}}}
    s = Settings(
        mongodb_url=mongo_server_url, mongodb_db=f"impressions_{random.randrange(10**9)}", indexes=json.dumps(two)
    )
    client: MongoClient = MongoClient(mongo_server_url, tz_aware=True)
    try:
        raw, now = client[s.mongodb_db], datetime.now(UTC)
        for index in ("a", "b"):
            query = raw.user_queries.insert_one({"query_text": index, "index": index, "user_id": f"u-{index}"})
            raw.inferences.insert_many([{"query_id": query.inserted_id, "model_version": None, "index": index,
                                         "feedback": "like", "created_at": now} for _ in range(2)])  # fmt: skip
        searches = [d["_id"] for d in raw.user_queries.find()]
        a = IndexDb(client, s.mongodb_db, s.for_index("a").index_spec)
        rows = impression_rows(a, [None, "a-v0001"], searches, now - timedelta(minutes=1))
        assert [row.user_id for row in rows] == ["u-a"] and rows[0].likes == {None: 2}
    finally:
        client.drop_database(s.mongodb_db)
        client.close()
