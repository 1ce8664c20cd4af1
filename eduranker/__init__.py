"""EduRanker Trainer: turns search feedback into better cross-encoder rerankers."""
