"""The serving variants of a version: their names, the default, and where a version folder keeps them.

No torch here: the settings validate `SERVING_VARIANT` against these names, the worker builds the
chosen variant beside each version it writes (`eduranker.pipeline.variants`), and serving loads it.

- `fp32`: the version's own weights, as trained and judged.
- `int8`: the Linear layers' weights quantized to int8 (torch's dynamic quantization: activations are
  quantized per batch at run time), written by the worker into `variants/int8/`; serving never converts.
- `bf16`: the fp32 weights run under bf16 autocast; nothing is written. On a CPU without native bf16
  (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo) it would be emulated and slow: served in fp32 there.
"""

from __future__ import annotations

from pathlib import Path

FP32, INT8, BF16 = "fp32", "int8", "bf16"
SERVING_VARIANTS = (FP32, INT8, BF16)
# Variants with files of their own in the version folder (the others run from the fp32 weights).
BUILT_VARIANTS = (INT8,)
# Chosen by bench/serving_latency.py (docs/performance.md "Rerank latency"): bf16 ranked like fp32 on
# held-out real text (NDCG@10 equal, ROC-AUC within 0.002) and, in micro-batches of 8, served 20
# documents at 4.2x CrossEncoder.predict's p50; int8 did not rank like fp32 (NDCG@10 -0.03 to -0.07),
# so it is there only to be asked for.
DEFAULT_SERVING_VARIANT = BF16
VARIANTS_DIR = "variants"
DESCRIPTION = "variant.json"


def variant_dir(version_folder: str | Path, name: str) -> Path:
    """Where a version folder keeps variant `name`'s files."""
    if name not in SERVING_VARIANTS:
        raise ValueError(f"unknown serving variant {name!r}; expected one of {', '.join(SERVING_VARIANTS)}")
    return Path(version_folder) / VARIANTS_DIR / name


def variant_problem(name: str) -> str | None:
    """Why `name` is not a serving variant (None: it is one)."""
    return None if name in SERVING_VARIANTS else f"must be one of {', '.join(SERVING_VARIANTS)}"
