"""What the search API imports to rerank with the champion (torch and transformers only: no Celery, no
database client; `pip install "eduranker-trainer[serving]"` installs just those).

    from eduranker.serving import ChampionReranker
    ranker = ChampionReranker("models", variant="bf16")  # MODELS_DIR, SERVING_VARIANT; follows models/champion
    result = ranker.rerank(query, documents)     # result.version, result.scores, result.order
    ranker.close()
"""

from eduranker.serving.reranker import ChampionReranker, RerankResult

__all__ = ["ChampionReranker", "RerankResult"]
