"""The exception family: retryable failures are worth another attempt, permanent ones are not."""


class EduRankerError(Exception):
    """Base class for errors raised by the trainer."""


class RetryableError(EduRankerError):
    """A transient failure (a server unreachable, a lost connection): try the job again later."""


class PermanentError(EduRankerError):
    """The job cannot succeed as asked; retrying would fail the same way."""


class JobRefused(PermanentError):
    """The data cannot support a training run (too little feedback, one class only)."""


class UnknownVersion(PermanentError):
    """A model version that the registry does not hold."""


class JobNotFound(PermanentError):
    """A training job id that `training_jobs` does not hold."""
