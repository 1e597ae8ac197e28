"""Every log line an activity emits names its healing: a worker interceptor binds the workflow
id, the fingerprint, the run id, the activity and its attempt into structlog's context variables
for the activity's duration, so structlog loggers and stdlib loggers (httpx, SQLAlchemy, a
driver's library) alike carry them. Workflow code logs through ``workflow.logger``, whose
extras core/logging.py lifts into the same fields.

Kept apart from core/logging.py, which a process that runs no worker imports without temporalio.
"""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity
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
            return await super().execute_activity(input)
