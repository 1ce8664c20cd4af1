"""Run a version's exported ONNX graph (written by the worker, `eduranker.pipeline.graph_export`) with
OpenVINO or ONNX Runtime, behind the call a transformers model offers: `runner(**batch).logits`.

Each runtime is imported only when a version is served with it (`pip install
"eduranker-trainer[serving]"` brings OpenVINO, `[onnx]` ONNX Runtime). Threads follow the rule the
torch path follows (docs/performance.md): a request uses as many threads as torch is set to use, and
as many requests run at once as the process has cores for.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eduranker.variants import ONNX, OPENVINO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphOutput:
    logits: torch.Tensor


class GraphRunner:
    """An exported graph loaded in its runtime; thread-safe (each thread has its own infer request)."""

    training = False

    def __init__(self, path: Path, runtime: str, *, bf16: bool, threads: int | None = None):
        self.runtime, self.path = runtime, path
        self.threads = threads or torch.get_num_threads()
        cores = len(os.sched_getaffinity(0))
        self.streams = max(1, cores // self.threads)  # requests that may run at once
        self._local = threading.local()
        if runtime == OPENVINO:
            self._compiled, self.inputs, self.precision = _openvino(path, self.threads, self.streams, bf16)
        elif runtime == ONNX:
            self._session, self.inputs = _onnxruntime(path, self.threads)
            self.precision = "fp32"
        else:
            raise ValueError(f"no graph runtime {runtime!r}")

    def eval(self) -> GraphRunner:
        return self

    def train(self, mode: bool = True) -> GraphRunner:
        if mode:
            raise ValueError("an exported graph cannot be trained")
        return self

    def __call__(self, **batch: torch.Tensor) -> GraphOutput:
        feed = {name: _array(batch, name) for name in self.inputs}
        if self.runtime == ONNX:
            logits = self._session.run(["logits"], feed)[0]
        else:
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = self._compiled.create_infer_request()
            logits = np.array(request.infer(feed)[0], copy=True)  # the request reuses its output buffer
        return GraphOutput(torch.from_numpy(np.asarray(logits, dtype=np.float32)))


def _array(batch: dict[str, torch.Tensor], name: str) -> np.ndarray:
    if name in batch:
        return batch[name].numpy().astype(np.int64, copy=False)
    # A graph with token types fed by a tokenizer without them: zeros, what the model itself defaults to.
    return np.zeros(tuple(batch["input_ids"].shape), dtype=np.int64)


def _openvino(path: Path, threads: int, streams: int, bf16: bool) -> tuple[Any, list[str], str]:
    import openvino as ov

    core = ov.Core()
    precision = "bf16" if bf16 else "f32"
    config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": streams,
              "INFERENCE_NUM_THREADS": threads * streams, "ENABLE_CPU_PINNING": False}  # fmt: skip
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    names = [port.get_any_name() for port in compiled.inputs]
    return compiled, names, precision


def _onnxruntime(path: Path, threads: int) -> tuple[Any, list[str]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, [i.name for i in session.get_inputs()]


def runtime_available(runtime: str) -> bool:
    """Whether this process can import the runtime a graph variant needs."""
    import importlib.util

    module = {OPENVINO: "openvino", ONNX: "onnxruntime"}[runtime]
    return importlib.util.find_spec(module) is not None
