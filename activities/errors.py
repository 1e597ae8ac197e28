"""How selfheal errors cross the activity boundary."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from selfheal.domain import SelfhealError


def as_application_error(exc: SelfhealError) -> ApplicationError:
    """``type`` is the error's class name; ``non_retryable`` follows its ``retryable``.

    Raise it ``from None``: the message already names the root error (e.g. psycopg's), and a
    chained cause with its stack traces (SQLAlchemy, psycopg) makes the failure larger than the
    Temporal server keeps for a retrying activity ("Failure exceeds size limit"), hiding it from
    ``temporal workflow describe`` and the UI."""
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=not exc.retryable)
