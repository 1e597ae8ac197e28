"""How selfheal errors cross the activity boundary."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from selfheal.domain import SelfhealError


def as_application_error(exc: SelfhealError) -> ApplicationError:
    """``type`` is the error's class name; ``non_retryable`` follows its ``retryable``."""
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=not exc.retryable)
