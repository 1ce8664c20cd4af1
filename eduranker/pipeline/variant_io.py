"""Build a version's serving variant when the version is written, and load it when serving.

int8: `torch.ao.quantization.quantize_dynamic` over the Linear layers (weights int8 per tensor,
activations quantized per batch at run time), saved as a plain state dict of tensors that
`torch.load(weights_only=True)` reads. Loading builds the model's skeleton from its config with int8
Linear modules in place and fills it from that file: no fp32 weight is converted at load time.

openvino, onnx: the version exported once as an ONNX graph (`eduranker.pipeline.graph_export`), which
serving hands to its runtime (`eduranker.serving.graph`).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from eduranker import variants as names
from eduranker.pipeline.graph_export import export_onnx
from eduranker.pipeline.model_io import quiet_hub
from eduranker.variants import BF16, BUILT_VARIANTS, DESCRIPTION, FP32, INT8, variant_dir

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
WEIGHTS = "model_int8.pt"


def build_variant(model: PreTrainedModel, version_folder: Path, name: str) -> dict[str, Any] | None:
    """Write variant `name` of `model` under the version folder (whose config.json is already written);
    returns its description for the version's metadata (None: fp32, nothing to describe)."""
    if name == FP32:
        return None
    if name == BF16:
        return {"variant": BF16, "files": [], "how": "the fp32 weights under bf16 autocast (nothing written)"}
    if name not in BUILT_VARIANTS:
        raise ValueError(f"no builder for serving variant {name!r}")
    if name in names.GRAPH_VARIANTS:
        return _build_graph(model, version_folder, name)
    began = time.perf_counter()
    folder = variant_dir(version_folder, INT8)
    folder.mkdir(parents=True)
    cpu_copy: torch.nn.Module = copy.deepcopy(model)
    cpu_copy.to(torch.device("cpu")).eval()
    quantize = torch.ao.quantization.quantize_dynamic
    quantized = quantize(cpu_copy, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    torch.save(quantized.state_dict(), folder / WEIGHTS)
    description = {
        "variant": INT8,
        "files": [f"{folder.relative_to(version_folder)}/{WEIGHTS}"],
        "how": "torch dynamic quantization: Linear weights qint8 per tensor, activations quantized per batch",
        "quantized_linear_layers": sum(1 for m in cpu_copy.modules() if type(m) is torch.nn.Linear),
        "torch": torch.__version__,
        "bytes": (folder / WEIGHTS).stat().st_size,
        "build_seconds": round(time.perf_counter() - began, 3),
    }
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2))
    return description


def _build_graph(model: PreTrainedModel, version_folder: Path, name: str) -> dict[str, Any]:
    """The exported graph, or where the exporter cannot trace this model a description saying why and no
    files: the version is still written, and served as the variant's fallback (`bf16` or `fp32`)."""
    began = time.perf_counter()
    folder = variant_dir(version_folder, name)
    folder.mkdir(parents=True)
    try:
        inputs = export_onnx(model, folder / names.GRAPH_FILE)
    except Exception as exc:
        log.exception("the %s variant could not be exported; the version is served without it", name)
        shutil.rmtree(folder)
        return {"variant": name, "files": [], "how": "not built", "error": f"{type(exc).__name__}: {exc}"}
    runtime = "OpenVINO, bf16 on a CPU with native bf16, fp32 otherwise" if name != names.ONNX else "ONNX Runtime, fp32"
    description = {
        "variant": name,
        "files": [f"{folder.relative_to(version_folder)}/{names.GRAPH_FILE}"],
        "how": f"the fp32 model exported as an ONNX graph, run by {runtime}",
        "inputs": inputs,
        "torch": torch.__version__,
        "bytes": (folder / names.GRAPH_FILE).stat().st_size,
        "build_seconds": round(time.perf_counter() - began, 3),
    }
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2))
    return description


def read_description(version_folder: str | Path, name: str) -> dict[str, Any] | None:
    """The description written beside a built variant; None where the version has none."""
    path = variant_dir(version_folder, name) / DESCRIPTION
    if not path.is_file():
        return None
    found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return found


def load_int8(version_folder: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a version's int8 variant, on the CPU (the dynamic int8 kernels are CPU ones)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_hub()
    tokenizer = AutoTokenizer.from_pretrained(str(version_folder))
    config = AutoConfig.from_pretrained(str(version_folder), num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    _int8_linear_in_place(model)
    state = torch.load(variant_dir(version_folder, INT8) / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval(), tokenizer


def _int8_linear_in_place(module: torch.nn.Module) -> None:
    """Replace every Linear with an empty dynamic-int8 Linear of its shape (filled by load_state_dict)."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    for name, child in module.named_children():
        if type(child) is torch.nn.Linear:
            has_bias = child.bias is not None
            empty = Int8Linear(child.in_features, child.out_features, bias_=has_bias, dtype=torch.qint8)  # type: ignore[no-untyped-call]
            setattr(module, name, empty)
        else:
            _int8_linear_in_place(child)
