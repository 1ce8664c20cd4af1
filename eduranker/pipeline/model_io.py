"""Load a cross-encoder for training or scoring, and save it so `CrossEncoder(path)` loads it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def quiet_hub() -> None:
    """No progress bars or hub chatter inside a worker; production names still resolve via the cache."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_cross_encoder(
    name_or_path: str | Path, device: torch.device, seed: int, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) with a single-logit ranking head; a missing head is initialised from `seed`.
    `revision`: the hub commit to load a hub name at (a local folder has none)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_hub()
    torch.manual_seed(seed)
    pinned: dict[str, Any] = {"revision": revision} if revision and not Path(name_or_path).is_dir() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **pinned)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(name_or_path), num_labels=1, output_loading_info=True, **pinned
    )
    # Remembered so training can give parameters that start from random a learning rate of their own.
    model.new_parameter_names = frozenset(info.get("missing_keys", ()))
    model.to(device)
    return model, tokenizer


def save_cross_encoder(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, max_length: int
) -> None:
    """Hugging Face layout with safetensors weights; CrossEncoder loads it as a reranker."""
    model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(folder)
