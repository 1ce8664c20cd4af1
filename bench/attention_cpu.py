"""Attention's forward and backward on this CPU, fp32 against bf16, torch's fused kernel against the math path.

    .venv/bin/python bench/attention_cpu.py [--batch 16] [--length 200] [--reps 10]

MiniLM's attention shape while fine-tuning (12 heads of 32, a batch of `--batch` pairs of `--length`
tokens, the last tenth padding, masked as transformers masks it for SDPA), inputs laid out as the model
makes them (a view of the projection, transposed). Prints the mean milliseconds of one forward and one
backward for each dtype and kernel, the sides alternated rep by rep, and which matrix-product kernels
oneDNN picked for a bf16 matmul (AMX shows as `avx10_1_512_amx` or `avx512_core_amx`). What chose
eduranker/pipeline/attention.py: attention in fp32 inside a bf16 step on a CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM = 12, 32


def inputs(batch: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    def projected() -> torch.Tensor:
        x = torch.randn(batch, length, HEADS * HEAD_DIM).view(batch, length, HEADS, HEAD_DIM).transpose(1, 2)
        return x.to(dtype).requires_grad_()

    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[..., length - length // 10 :] = False
    grad = torch.randn(batch, length, HEADS, HEAD_DIM).transpose(1, 2).to(dtype)
    return projected(), projected(), projected(), mask, grad


def once(q, k, v, mask, grad, backend: SDPBackend) -> tuple[float, float]:
    with sdpa_kernel(backend):
        began = time.perf_counter()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        mid = time.perf_counter()
        out.backward(grad)
        return mid - began, time.perf_counter() - mid


def onednn_kernels() -> str:
    """The implementation names oneDNN reports for a bf16 matmul, from a child with ONEDNN_VERBOSE=1."""
    code = "import torch; a = torch.randn(512, 512, dtype=torch.bfloat16); a @ a"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"}).stdout  # fmt: skip
    names = {line.split(",")[6] for line in out.splitlines() if ",primitive,exec," in line}
    return ", ".join(sorted(names)) or "none (matmul not run by oneDNN)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sides = {
        (dtype_name, backend.name): (inputs(args.batch, args.length, dtype), backend)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH)
    }
    times: dict[tuple[str, str], list[tuple[float, float]]] = {side: [] for side in sides}
    for tensors, backend in sides.values():  # warm-up
        once(*tensors, backend)
    for _ in range(args.reps):
        for side, (tensors, backend) in sides.items():
            times[side].append(once(*tensors, backend))
    print(f"{len(os.sched_getaffinity(0))} threads, torch {torch.__version__}; batch {args.batch} x {HEADS} heads x "
          f"{args.length} tokens x {HEAD_DIM}; oneDNN's bf16 matmul: {onednn_kernels()}")  # fmt: skip
    for (dtype_name, backend), rows in times.items():
        forward = sum(f for f, _ in rows) / len(rows) * 1000
        backward = sum(b for _, b in rows) / len(rows) * 1000
        print(f"{dtype_name} {backend:<16} forward {forward:6.1f} ms  backward {backward:6.1f} ms  "
              f"both {forward + backward:6.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
