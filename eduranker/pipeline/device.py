"""Which device a job runs on, and how we recognise running out of GPU memory.

Only called inside the job (the Celery child process): the parent never initialises CUDA.
"""

from __future__ import annotations

import os

import torch


def configure_threads(requested: int = 0) -> int:
    """Match intra-op threads to the cores this process may use (cgroup/affinity aware)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = requested if requested > 0 else available
    torch.set_num_threads(threads)
    return threads


def select_device() -> torch.device:
    # The worker is pinned to one GPU by CUDA_VISIBLE_DEVICES (see worker/app.py), so it is cuda:0.
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
