"""Everything that speaks to MongoDB. Never imports torch or Celery."""

from eduranker.store.connection import connect, ensure_indexes, retryable_on_mongo_errors

__all__ = ["connect", "ensure_indexes", "retryable_on_mongo_errors"]
