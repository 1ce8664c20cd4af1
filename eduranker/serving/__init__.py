"""What the search API imports to rerank with the champion (torch and transformers only: no Celery, no
database client).

    from eduranker.serving import ChampionReranker
    ranker = ChampionReranker("models")          # MODELS_DIR; follows models/champion
    result = ranker.rerank(query, documents)     # result.version, result.scores, result.order
    ranker.close()
"""

from eduranker.serving.reranker import ChampionReranker, RerankResult

__all__ = ["ChampionReranker", "RerankResult"]
