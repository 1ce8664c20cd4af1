"""The exception family: retryable failures are worth another attempt, permanent ones are not."""


class EduRankerError(Exception):
    """Base class for errors raised by the trainer."""


class RetryableError(EduRankerError):
    """A transient failure (a server unreachable, a lost connection): try the job again later."""


class JobBusy(RetryableError):
    """The job is running and its heartbeat is fresh: wait until it ends or falls silent."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(EduRankerError):
    """The job cannot succeed as asked; retrying would fail the same way."""


class JobRefused(PermanentError):
    """The data cannot support a training run (too little feedback, one class only)."""


class UnknownVersion(PermanentError):
    """A model version that the registry does not hold."""


class JobNotFound(PermanentError):
    """A training job id that `training_jobs` does not hold."""


class AccessDenied(PermanentError):
    """MongoDB refused the credentials (or their rights): retrying with the same ones cannot help."""


class VersionUnusable(PermanentError):
    """A registered version whose artifacts are missing or do not load: nothing may point at it (a
    version the registry knows, so not an UnknownVersion)."""


class Refused(PermanentError):
    """An operator's request that would break a promise of the registry (promote a rejected version
    without --force, roll back with nothing to roll back to)."""


class ChampionChanged(PermanentError):
    """The champion record changed between the read a switch was decided on and the switch (a rollback
    prepared on a record someone switched meanwhile): nothing changed."""


class StaleCandidate(ChampionChanged):
    """The champion changed while a candidate trained: its gate judged it against another model."""


class Superseded(EduRankerError):
    """This run no longer owns its job (another attempt took it over): it stops and writes nothing."""


class HandedBack(EduRankerError):
    """The worker is shutting down: the job was handed back to the queue for another worker."""
