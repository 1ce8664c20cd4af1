"""The producer: watches feedback and enqueues training jobs. Never imports torch.

From a Python shell: `from producer import request_training; request_training(num_epochs=1)`.
"""

from producer.outbox import request_training

__all__ = ["request_training"]
