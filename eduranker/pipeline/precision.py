"""How the arithmetic of a training run is done: one plan, decided once from the device and a request.

The accelerated path (autocast, loss scaling, pinned host memory) is the one a GPU takes. bf16 or
fp16 on a CPU runs the same branches (CPU autocast, a CPU GradScaler), so the suite exercises them on a
machine without a GPU. The optimizer is fused AdamW everywhere (one kernel per step; on a CPU 5× faster
than the multi-tensor update, docs/performance.md). A CPU with native bf16 arithmetic
(AVX512-BF16 or AMX) multiplies bf16 matrices about twice as fast as fp32 ones, so `auto` takes bf16
there too (docs/performance.md measures both); scoring stays fp32 on a CPU, the gate's judgement exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None: plain fp32
    scale_loss: bool  # fp16 needs a GradScaler; bf16 has fp32's range
    pin_memory: bool  # page-locked batches, copied to the GPU asynchronously

    @property
    def name(self) -> str:
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names[self.autocast_dtype]


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (the kernel's flags; False where unknown)."""
    try:
        flags = Path(cpuinfo).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(
    device: torch.device, requested: str = "auto", *, native_cpu_bf16: bool | None = None
) -> Precision:
    """`auto` is bf16 on a GPU that has it (fp16 with loss scaling otherwise), bf16 on a CPU with native
    bf16 arithmetic, and fp32 on any other CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    on_gpu = device.type == "cuda"
    if requested == "auto" and on_gpu:
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif requested == "auto":
        native = cpu_has_native_bf16() if native_cpu_bf16 is None else native_cpu_bf16
        requested = "bf16" if native else "fp32"
    if requested == "fp32":
        return Precision(None, scale_loss=False, pin_memory=False)
    dtype = torch.bfloat16 if requested == "bf16" else torch.float16
    return Precision(dtype, scale_loss=dtype == torch.float16, pin_memory=on_gpu)
