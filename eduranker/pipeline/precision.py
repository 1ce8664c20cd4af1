"""How the arithmetic of a training run is done: one plan, decided once from the device and a request.

The accelerated path (autocast, loss scaling, the fused optimizer kernel, pinned host memory) is the
one a GPU takes. Requesting bf16 or fp16 on a CPU runs the same branches (CPU autocast, a CPU
GradScaler, CPU fused AdamW), so the suite exercises them on a machine without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None: plain fp32
    scale_loss: bool  # fp16 needs a GradScaler; bf16 has fp32's range
    fused_optimizer: bool  # one fused AdamW kernel instead of multi-tensor (foreach) updates
    pin_memory: bool  # page-locked batches, copied to the GPU asynchronously

    @property
    def name(self) -> str:
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names[self.autocast_dtype]


def choose_precision(device: torch.device, requested: str = "auto") -> Precision:
    """`auto` is bf16 on a GPU that has it (fp16 with loss scaling otherwise) and fp32 on a CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    on_gpu = device.type == "cuda"
    if requested == "auto":
        requested = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    if requested == "fp32":
        return Precision(None, scale_loss=False, fused_optimizer=on_gpu, pin_memory=False)
    dtype = torch.bfloat16 if requested == "bf16" else torch.float16
    return Precision(dtype, scale_loss=dtype == torch.float16, fused_optimizer=True, pin_memory=on_gpu)
