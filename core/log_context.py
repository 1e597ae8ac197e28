"""Every log line an activity emits names its healing: a worker interceptor binds the workflow
id, the fingerprint, the run id, the activity and its attempt into structlog's context variables
for the activity's duration, so structlog loggers and stdlib loggers (httpx, SQLAlchemy, a
driver's library) alike carry them. Workflow code logs through ``workflow.logger``, whose
extras core/logging.py lifts into the same fields.

The same interceptor keeps one kind of cancellation out of the warnings: an activity still
running when its workflow ended (the side-effect watch the workflow cancelled just before it
completed learns of it at its next heartbeat, when the server no longer knows the activity) is
cancelled with ``not_found``. Temporal would log it as "Completing activity as failed" with a
traceback, once per healing; it ends as a benign error instead (a debug line): nothing failed.

Kept apart from core/logging.py, which a process that runs no worker imports without temporalio.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from selfheal.core.logging import healing_fields


def activity_fields(info: activity.Info) -> dict[str, Any]:
    return {
        **healing_fields(info.workflow_id),
        "run_id": info.workflow_run_id,
        "activity": info.activity_type,
        "attempt": info.attempt,
    }


class HealingLogInterceptor(Interceptor):
    """Give it to the worker (``Worker(..., interceptors=[HealingLogInterceptor()])``)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindHealing(next)


class _BindHealing(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # Bound before the activity starts, so a threaded activity's copied context has them too.
        fields = {k: v for k, v in activity_fields(activity.info()).items() if v is not None}
        with structlog.contextvars.bound_contextvars(**fields):
            try:
                return await super().execute_activity(input)
            except asyncio.CancelledError:
                details = activity.cancellation_details()
                if details is None or not details.not_found:
                    raise
                raise ApplicationError(
                    "the workflow that ran this activity has ended: nothing left to do",
                    type="WorkflowEnded",
                    non_retryable=True,
                    category=ApplicationErrorCategory.BENIGN,
                ) from None
