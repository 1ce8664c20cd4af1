"""Tiny cross-encoders of each architecture family of the base-model defaults, built offline.

Random weights from the family's own config at tiny sizes (2 layers, hidden 32), and a tokenizer of the
family's kind (WordPiece for BERT, a SentencePiece-style Unigram for XLM-RoBERTa, CamemBERT and
DeBERTa-v2) trained with the `tokenizers` package on a small English and French corpus, then wrapped in
the family's own tokenizer class (so its normaliser, pre-tokenizer and pair template are the family's).
Saved with save_pretrained as a sentence-transformers CrossEncoder folder, as a hub base model is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from console.demo import labelled_pairs

FAMILIES = ("bert", "xlm-roberta", "camembert", "deberta-v2")
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 256

FRENCH = [
    "Qu’est-ce que la photosynthèse\u202f? Les plantes transforment la lumière en sucre.",
    "« Les Misérables » de Victor Hugo\u00a0: résumé et personnages principaux.",
    "Le cœur humain et la circulation sanguine, leçon de SVT pour le collège.",
    "Ex æquo : deux élèves ont obtenu la même note à l’examen de mathématiques.",
    "La Révolution française de 1789 : causes, événements et conséquences.",
    "Fractions et nombres décimaux, exercices corrigés pour la classe de sixième.",
    "L’œuvre de Molière au XVIIe siècle : comédies, personnages et mise en scène.",
    "Où se trouve la côte d’Azur ? Géographie de la France et de ses régions.",
]


def corpus() -> list[str]:
    """The texts the tokenizers are trained on: the demo's queries and documents, and French ones."""
    texts = {text for query, document, _, _ in labelled_pairs(seed=0) for text in (query, document)}
    return sorted(texts) + FRENCH * 3


def _unigram_pieces(texts: list[str], specials: list[str], vocab_size: int) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary, (piece, log probability), specials first in the given order."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=specials[1],
                                      shrinking_factor=0.75, max_piece_length=12)  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer=trainer)
    learnt = [(str(p), float(s)) for p, s in json.loads(tokenizer.to_str())["model"]["vocab"] if p not in specials]
    return [(s, 0.0) for s in specials] + learnt


def _wordpiece_vocab(texts: list[str], vocab_size: int) -> dict[str, int]:
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1)
    return dict(tokenizer.get_vocab())


def tokenizer_of(family: str, texts: list[str]) -> Any:
    import transformers as t

    if family == "bert":
        return t.BertTokenizer(vocab=_wordpiece_vocab(texts, 800), do_lower_case=True)
    if family == "xlm-roberta":
        return t.XLMRobertaTokenizer(vocab=_unigram_pieces(texts, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], 800))
    if family == "camembert":
        pieces = _unigram_pieces(texts, ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<s>", "</s>", "<mask>"], 800)
        return t.CamembertTokenizer(vocab=pieces)
    if family == "deberta-v2":
        pieces = _unigram_pieces(texts, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], 800)
        return t.DebertaV2Tokenizer(vocab=pieces, unk_id=1)
    raise ValueError(family)


def config_of(family: str, tokenizer: Any) -> Any:
    import transformers as t

    sizes = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
             "intermediate_size": INTERMEDIATE, "vocab_size": len(tokenizer), "num_labels": 1,
             "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    if family == "bert":
        return t.BertConfig(max_position_embeddings=POSITIONS, **sizes)
    if family in ("xlm-roberta", "camembert"):
        cls = t.XLMRobertaConfig if family == "xlm-roberta" else t.CamembertConfig
        return cls(max_position_embeddings=POSITIONS + 2, type_vocab_size=1, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, **sizes)  # fmt: skip
    # mDeBERTa-v3's shape: relative attention, no absolute positions, no token types.
    return t.DebertaV2Config(max_position_embeddings=POSITIONS, relative_attention=True, position_buckets=32,
                             max_relative_positions=-1, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                             type_vocab_size=0, norm_rel_ebd="layer_norm", share_att_key=True, **sizes)  # fmt: skip


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny cross-encoder of `family` with a fresh single-logit head, saved as a CrossEncoder folder."""
    import torch
    import transformers as t

    torch.manual_seed(seed)
    tokenizer = tokenizer_of(family, corpus())
    model = t.AutoModelForSequenceClassification.from_config(config_of(family, tokenizer))
    model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.model_max_length = POSITIONS
    tokenizer.save_pretrained(folder)
    return folder
