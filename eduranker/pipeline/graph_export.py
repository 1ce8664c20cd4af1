"""Export a cross-encoder as an ONNX graph, once, when the worker writes a version: serving runs the
graph (OpenVINO or ONNX Runtime) and never converts a model at load time.

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` where the model has them), each of
dynamic batch and length, and returns the ranking logits (`logits`, shape batch × 1), in fp32: the
runtime picks the arithmetic (OpenVINO runs it in bf16 on a CPU with native bf16)."""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel

# ONNX operator set: 17 has LayerNormalization as one operator, which every runtime fuses.
OPSET = 17


def graph_inputs(model: PreTrainedModel) -> list[str]:
    """The inputs the graph takes, in the order of the model's `forward` (the exporter names them in that
    order: names given in another order would silently swap two inputs)."""
    wanted = {"input_ids", "attention_mask", "token_type_ids"}
    return [name for name in inspect.signature(model.forward).parameters if name in wanted]


def export_onnx(model: PreTrainedModel, path: Path) -> list[str]:
    """Write `model` (fp32, on the CPU, in eval mode; the caller's model is left as it is) to `path`;
    returns the graph's input names."""
    cpu_copy: torch.nn.Module = copy.deepcopy(model)
    cpu_copy.to(torch.device("cpu"), torch.float32).eval()
    names = graph_inputs(model)
    sample = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 0]]) % int(model.config.vocab_size)
    example = {"input_ids": sample, "attention_mask": (sample != 0).long(), "token_type_ids": torch.zeros_like(sample)}
    axes = {name: {0: "batch", 1: "length"} for name in names}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in transformers' masks
        torch.onnx.export(cpu_copy, tuple(example[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)  # fmt: skip
    return names
