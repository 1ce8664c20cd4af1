"""Fine-tune a cross-encoder on labelled pairs: bucketed batches, class-weighted BCE, two learning rates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from eduranker.pipeline.attention import fp32_attention
from eduranker.pipeline.encoding import EncodedPairs, bucketed_batches, collate, encode_pairs
from eduranker.pipeline.precision import Precision, choose_precision

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ProgressFn = Callable[[int, int, int, float], None]  # (epoch, step, total_steps, loss)
StopFn = Callable[[], bool]  # asked before every step; True stops training (cheap: the caller throttles)


class TrainingStopped(Exception):
    """`should_stop` answered True: the run stopped after `steps` of `total_steps` steps."""

    def __init__(self, steps: int, total_steps: int) -> None:
        super().__init__(f"training stopped after step {steps} of {total_steps}")
        self.steps, self.total_steps = steps, total_steps


@dataclass(frozen=True)
class TrainConfig:
    """Training's config. The fields naming a setting take it (`Settings.config(TrainConfig)`, once per
    job; their defaults live with the settings alone); the others are constants of fine-tuning."""

    epochs: int = field(metadata={"setting": "num_epochs"})
    batch_size: int = field(metadata={"setting": "batch_size"})
    learning_rate: float = field(metadata={"setting": "learning_rate"})
    head_learning_rate: float = field(metadata={"setting": "head_learning_rate"})
    max_length: int = field(metadata={"setting": "max_length"})
    seed: int = field(metadata={"setting": "seed"})
    freeze_embeddings: bool = field(metadata={"setting": "freeze_embeddings"})
    precision: str = field(metadata={"setting": "train_precision"})  # see eduranker.pipeline.precision
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Dropout on attention probabilities while fine-tuning; None keeps the checkpoint's. At 0 the CPU
    # runs SDPA's fused (flash) attention instead of the math path and draws no mask of batch × heads ×
    # length² random numbers each layer: a third of a bf16 step at ~200 tokens (docs/performance.md).
    attention_dropout: float | None = 0.0
    # Dropout on hidden states (embeddings, each layer's outputs, the head); None keeps the checkpoint's
    # (0.1). Off: held-out ROC-AUC rose from 0.612 to 0.694 (three seeds, mixed lengths) and the step no
    # longer draws 14 masks of random numbers, a fifth of a bf16 step on a CPU (docs/performance.md).
    hidden_dropout: float | None = 0.0


@dataclass
class TrainStats:
    steps: int = 0
    pairs_seen: int = 0
    tokens_seen: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    pos_weight: float = 1.0
    precision: str = "fp32"

    def record(self, lengths: np.ndarray) -> None:
        """Count one step over pairs of these token lengths."""
        self.steps += 1
        self.pairs_seen += len(lengths)
        self.tokens_seen += int(lengths.sum())
        self.padded_tokens += int(lengths.max()) * len(lengths)

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_seen / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "pairs_seen": self.pairs_seen,
            "tokens_seen": self.tokens_seen,
            "padding_fraction": 1 - self.tokens_seen / self.padded_tokens if self.padded_tokens else 0.0,
            "seconds": round(self.seconds, 3),
            "pairs_per_second": round(self.pairs_per_second, 2),
            "epoch_losses": [round(x, 5) for x in self.epoch_losses],
            "pos_weight": round(self.pos_weight, 4),
            "precision": self.precision,
        }


def _param_groups(model: PreTrainedModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Pretrained weights at the fine-tuning rate; weights the checkpoint lacked (a new head) faster."""
    new_names: frozenset[str] = getattr(model, "new_parameter_names", frozenset())
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name in new_names
        no_decay = param.ndim < 2  # biases and LayerNorm weights
        groups.setdefault((is_head, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": config.head_learning_rate if is_head else config.learning_rate,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (is_head, no_decay), params in groups.items()
    ]


@dataclass
class TrainingData:
    encoded: EncodedPairs
    labels: torch.Tensor
    pos_weight: float  # dislikes / likes, so the rarer class weighs as much as the common one


def prepare_data(
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    documents: Sequence[str],
    labels: Sequence[float],
    max_length: int,
) -> TrainingData:
    encoded = encode_pairs(tokenizer, queries, documents, max_length)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    positives = float(y.sum())
    negatives = float(y.numel() - positives)
    return TrainingData(encoded, y, negatives / positives if positives and negatives else 1.0)


@dataclass
class Optimisation:
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.BCEWithLogitsLoss


def prepare_model(model: PreTrainedModel, config: TrainConfig) -> int:
    """Freeze what is not worth training and set the dropouts configured; returns the dropouts changed."""
    if config.freeze_embeddings:
        # Half of MiniLM's parameters are the vocabulary matrix; its dense Adam update each step costs more
        # than it teaches from a few thousand pairs (bench/train_throughput.py measures both ways).
        model.get_input_embeddings().requires_grad_(False)
    changed = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Dropout):
            continue
        p = config.attention_dropout if name.endswith("attention.self.dropout") else config.hidden_dropout
        if p is not None:
            module.p, changed = p, changed + 1
    return changed


def build_optimisation(
    model: PreTrainedModel, config: TrainConfig, data: TrainingData, precision: Precision, device: torch.device
) -> Optimisation:
    from transformers import get_linear_schedule_with_warmup

    # Fused: one kernel for every parameter's update, on a CPU as on a GPU (bench/train_throughput.py).
    optimizer = torch.optim.AdamW(_param_groups(model, config), fused=True)
    total_steps = max(math.ceil(len(data.encoded) / config.batch_size) * config.epochs, 1)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)  # type: ignore[no-untyped-call]
    return Optimisation(
        optimizer,
        scheduler,
        torch.amp.GradScaler(device.type, enabled=precision.scale_loss),
        torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(data.pos_weight, device=device)),
    )


def train_step(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    target: torch.Tensor,
    opt: Optimisation,
    precision: Precision,
    max_grad_norm: float,
) -> float:
    """One optimizer step; the loss is computed in fp32 whatever the autocast dtype."""
    device_type = target.device.type
    with torch.autocast(device_type, enabled=precision.autocast_dtype is not None, dtype=precision.autocast_dtype):
        logits = model(**batch).logits.view(-1)
    loss = opt.loss_fn(logits.float(), target)
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return float(loss.detach())


def to_device(batch: dict[str, torch.Tensor], device: torch.device, precision: Precision) -> dict[str, torch.Tensor]:
    if precision.pin_memory:
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    documents: Sequence[str],
    labels: Sequence[float],
    config: TrainConfig,
    *,
    device: torch.device,
    on_step: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainStats:
    """Train in place. Raises torch.cuda.OutOfMemoryError unchanged so the caller can halve the batch,
    and TrainingStopped before the first step `should_stop` refuses (a cancelled or superseded run)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = prepare_data(tokenizer, queries, documents, labels, config.max_length)
    precision = choose_precision(device, config.precision)
    prepare_model(model, config)
    opt = build_optimisation(model, config, data, precision, device)
    lengths = data.encoded.lengths
    total_steps = math.ceil(len(data.encoded) / config.batch_size) * config.epochs
    stats = TrainStats(pos_weight=data.pos_weight, precision=precision.name)

    model.train()
    started = time.perf_counter()
    with fp32_attention(model, precision.autocast_dtype, device):  # bf16 on a CPU: attention in fp32
        for epoch in range(1, config.epochs + 1):
            losses = []
            for indices in bucketed_batches(lengths, config.batch_size, rng):
                if should_stop is not None and should_stop():
                    raise TrainingStopped(stats.steps, total_steps)
                batch = to_device(collate(data.encoded, indices), device, precision)
                target = data.labels[indices].to(device, non_blocking=True)
                losses.append(train_step(model, batch, target, opt, precision, config.max_grad_norm))
                stats.record(lengths[indices])
                if on_step is not None:
                    on_step(epoch, stats.steps, total_steps, losses[-1])
            stats.epoch_losses.append(sum(losses) / max(len(losses), 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - started
    model.train(False)
    return stats
