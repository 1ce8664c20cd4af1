"""The role compose's MongoDB init script creates (deploy/mongo-init/10-trainer-user.js), run by node
with the mongo shell's `db` recorded: each index of INDEXES is granted its own collections, and only
those the trainer writes."""

import json
import shutil
import subprocess

import pytest

from tests.celery_worker import ROOT

INIT = ROOT / "deploy" / "mongo-init"
RUN = """
const fs = require("fs");
const read = fs.readFileSync;
fs.readFileSync = (path, enc) => read(path.replace("/docker-entrypoint-initdb.d", process.argv[2]), enc);
const made = {};
const admin = { createRole: (r) => { made.role = r; }, createUser: (u) => { made.user = u.user; } };
global.db = { getSiblingDB: () => admin };
require(process.argv[3]);
console.log(JSON.stringify(made));
"""


def made_role(tmp_path, indexes: dict) -> dict:
    script = tmp_path / "run.js"
    script.write_text(RUN)
    env = {"PATH": "/usr/bin:/bin", "MONGODB_DB": "edu_ranker_db", "MONGO_TRAINER_USER": "trainer",
           "MONGO_TRAINER_PASSWORD": "x", "INDEXES": json.dumps(indexes)}  # fmt: skip
    out = subprocess.run(["node", str(script), str(INIT), str(INIT / "10-trainer-user.js")], env=env,
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the mongo shell's script")
def test_each_index_is_granted_its_own_collections_and_no_more(tmp_path):
    alone = made_role(tmp_path, {})["role"]["privileges"]
    two = made_role(tmp_path, {"fr": {"owns": {"query.index": "fr"}}, "default": {}})["role"]["privileges"]
    by_name = {p["resource"]["collection"]: p for p in two}
    owned = [p["resource"]["collection"] for p in alone if "insert" in p["actions"]]
    assert owned and "training_jobs" in owned and "inferences" not in owned
    assert all(p["resource"]["db"] == "edu_ranker_db" for p in two)
    assert two[: len(alone)] == alone  # the default index's grants as before
    assert {name for name in by_name if "." in name} == {f"fr.{name}" for name in owned}  # and fr's own
    for name in owned:
        assert by_name[f"fr.{name}"]["actions"] == by_name[name]["actions"]
