"""Fine-tune a cross-encoder on labelled pairs: bucketed batches, class-weighted BCE, two learning rates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from eduranker.pipeline.encoding import bucketed_batches, collate, encode_pairs

ProgressFn = Callable[[int, int, int, float], None]  # (epoch, step, total_steps, loss)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    head_learning_rate: float
    max_length: int
    seed: int
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    freeze_embeddings: bool = True


@dataclass
class TrainStats:
    steps: int = 0
    pairs_seen: int = 0
    tokens_seen: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    pos_weight: float = 1.0

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_seen / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "pairs_seen": self.pairs_seen,
            "tokens_seen": self.tokens_seen,
            "padding_fraction": 1 - self.tokens_seen / self.padded_tokens if self.padded_tokens else 0.0,
            "seconds": round(self.seconds, 3),
            "pairs_per_second": round(self.pairs_per_second, 2),
            "epoch_losses": [round(x, 5) for x in self.epoch_losses],
            "pos_weight": round(self.pos_weight, 4),
        }


def _param_groups(model, config: TrainConfig) -> list[dict]:
    """Pretrained weights at the fine-tuning rate; weights the checkpoint lacked (a new head) faster."""
    new_names = getattr(model, "new_parameter_names", frozenset())
    groups: dict[tuple[bool, bool], list] = {}
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


def fine_tune(
    model,
    tokenizer,
    queries: Sequence[str],
    documents: Sequence[str],
    labels: Sequence[float],
    config: TrainConfig,
    *,
    device: torch.device,
    on_step: ProgressFn | None = None,
) -> TrainStats:
    """Train in place. Raises torch.cuda.OutOfMemoryError unchanged so the caller can halve the batch."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoded = encode_pairs(tokenizer, queries, documents, config.max_length)
    lengths = encoded.lengths
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    positives = float(y.sum())
    negatives = float(y.numel() - positives)
    # Weight likes by dislikes/likes so the rarer class counts as much as the common one.
    pos_weight = negatives / positives if positives and negatives else 1.0
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))

    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.freeze_embeddings:
        # Half of MiniLM's parameters are the vocabulary matrix; its dense Adam update each step costs more
        # than it teaches from a few thousand pairs (bench/train_throughput.py measures both ways).
        model.get_input_embeddings().requires_grad_(False)
    # Multi-tensor (foreach) Adam on CPU; the fused kernel on CUDA.
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(_param_groups(model, config), fused=fused, foreach=not fused)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_fraction * total_steps), max(total_steps, 1)
    )
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    stats = TrainStats(pos_weight=pos_weight)
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        epoch_loss, epoch_batches = 0.0, 0
        for indices in bucketed_batches(lengths, config.batch_size, rng):
            batch = collate(encoded, indices)
            if use_amp:
                batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
            target = y[indices].to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp, dtype=amp_dtype):
                logits = model(**batch).logits.view(-1)
            loss = loss_fn(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            value = float(loss.detach())
            epoch_loss += value
            epoch_batches += 1
            stats.steps += 1
            stats.pairs_seen += len(indices)
            stats.tokens_seen += int(lengths[indices].sum())
            stats.padded_tokens += int(lengths[indices].max()) * len(indices)
            if on_step is not None:
                on_step(epoch + 1, stats.steps, total_steps, value)
        stats.epoch_losses.append(epoch_loss / max(epoch_batches, 1))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - started
    model.eval()
    return stats
