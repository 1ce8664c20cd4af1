"""The serving variants of a version: their names, the default, and where a version folder keeps them.

No torch here: the settings validate `SERVING_VARIANT` against these names, the worker builds the
chosen variant beside each version it writes (`eduranker.pipeline.variant_io`), and serving loads it.

- `fp32`: the version's own weights, as trained and judged.
- `int8`: the Linear layers' weights quantized to int8 (torch's dynamic quantization: activations are
  quantized per batch at run time), written by the worker into `variants/int8/`; serving never converts.
- `bf16`: the fp32 weights run under bf16 autocast; nothing is written. On a CPU without native bf16
  (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo) it would be emulated and slow: served in fp32 there.
- `openvino`: the version exported as an ONNX graph by the worker (`variants/openvino/model.onnx`), run
  by OpenVINO, in bf16 on a CPU with native bf16 and in fp32 on any other; served as `bf16` where the
  file or the `openvino` package is missing.
- `onnx`: the same exported graph run by ONNX Runtime in fp32 (`variants/onnx/model.onnx`); the fastest
  exact path measured on a CPU without native bf16; served in fp32 where the file or `onnxruntime` is
  missing.
"""

from __future__ import annotations

from pathlib import Path

FP32, INT8, BF16, OPENVINO, ONNX = "fp32", "int8", "bf16", "openvino", "onnx"
SERVING_VARIANTS = (FP32, INT8, BF16, OPENVINO, ONNX)
# Variants with files of their own in the version folder (the others run from the fp32 weights).
BUILT_VARIANTS = (INT8, OPENVINO, ONNX)
# Variants served from an exported ONNX graph (`GRAPH_FILE` in their folder), and the runtime of each.
GRAPH_VARIANTS = (OPENVINO, ONNX)
GRAPH_FILE = "model.onnx"
# Chosen by bench/serving_latency.py (docs/performance.md "Rerank latency"): openvino (bf16 on a CPU
# with native bf16) was the fastest side on short, long and mixed texts alike and ranked like fp32 on
# held-out real text (NDCG@10 and ROC-AUC within 0.002); bf16 autocast is what it falls back to; int8
# did not rank like fp32 (NDCG@10 -0.03 to -0.07), so it is there only to be asked for.
DEFAULT_SERVING_VARIANT = OPENVINO
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
