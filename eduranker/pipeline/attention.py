"""Attention in fp32 on a CPU while a bf16 step runs everything else in bf16.

CPU autocast runs scaled-dot-product attention in bf16. torch's fused CPU attention kernel computes its
bf16 backward about 2.7× slower than its fp32 one (MiniLM's shape at ~200 tokens: 80 ms against 30 ms a
layer, docs/performance.md), while the matrix products around it gain most from bf16 (AMX or
AVX512-BF16). So while fine-tuning on a CPU in bf16, attention takes fp32 inputs with autocast off and
hands bf16 back; the projections before and after it stay in bf16. Elsewhere (a GPU, fp32 training,
scoring) the model's own attention runs unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel

NAME = "eduranker_cpu_fp32_sdpa"


def _fp32_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or query.dtype != torch.bfloat16:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    mask = attention_mask  # boolean (SDPA's masks) or additive; an additive one follows the inputs to fp32
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, *args, **kwargs)
    return out.to(query.dtype), weights


def _registered() -> bool:
    """Register the function with transformers' attention interface, and SDPA's padding masks beside it (a
    custom name without a mask function of its own gets no mask at all); False where this transformers has
    no such interface (older releases dispatch attention by class, and keep their own)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    if NAME not in AttentionInterface._global_mapping:
        AttentionMaskInterface.register(NAME, sdpa_mask)
        AttentionInterface.register(NAME, _fp32_sdpa)
    return True


@contextlib.contextmanager
def fp32_attention(model: PreTrainedModel, autocast_dtype: torch.dtype | None, device: torch.device) -> Iterator[bool]:
    """While inside, a bf16 run on a CPU computes attention in fp32 (yields whether it does); the model's
    own implementation is restored on leaving, so a saved or served model never names this one."""
    config = model.config
    before = str(getattr(config, "_attn_implementation", ""))
    wanted = device.type == "cpu" and autocast_dtype == torch.bfloat16 and before == "sdpa"
    if not wanted or not _registered():
        yield False
        return
    model.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        model.set_attn_implementation(before)
