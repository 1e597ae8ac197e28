"""Temporal's view of healings: the list filter, a row per listed healing, one healing's status,
and why an update was refused. Used by the door (``Healings``) only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from selfheal.domain import HealingPhase, HealingStatus, IntakeError
from selfheal.domain.errors import HealingNotFound, TemporalUnavailable
from selfheal.workflows.contract import (
    FAULT_SERVICE,
    FAULT_TYPE,
    OUTCOME,
    PHASE,
    RISK_LEVEL,
    ROOT_CAUSE,
    WORKFLOW_TYPE,
)
from selfheal.workflows.healing import HealingWorkflow

__all__ = [
    "WORKER_ANSWER_TIMEOUT",
    "FilterError",
    "HealingRow",
    "describe_healing",
    "fetch_status",
    "healing_row",
    "update_failure_message",
    "visibility_query",
]

# A query or update needs a worker to answer; without one the call would wait indefinitely.
WORKER_ANSWER_TIMEOUT = timedelta(seconds=15)


class FilterError(IntakeError):
    """A list filter argument that is wrong; ``field`` names it (the message starts with it)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class HealingRow(BaseModel):
    """One healing as the visibility store sees it."""

    workflow_id: str
    status: str
    phase: str
    service: str
    fault_type: str
    root_cause: str
    risk: str
    outcome: str
    started_at: datetime | None
    closed_at: datetime | None


def visibility_query(phase: str | None) -> str:
    """The list filter; ``phase`` is checked against the known phases (no query injection)."""
    query = f"WorkflowType='{WORKFLOW_TYPE}'"
    if phase is None:
        return query
    known = [p.value for p in HealingPhase]
    if phase not in known:
        raise FilterError(
            f"phase: expected one of {', '.join(known)}; got {phase!r}", field="phase"
        )
    return f"{query} AND {PHASE.name}='{phase}'"


def healing_row(execution: WorkflowExecution) -> HealingRow:
    attributes = execution.typed_search_attributes
    return HealingRow(
        workflow_id=execution.id,
        status=execution.status.name if execution.status else "UNKNOWN",
        phase=attributes.get(PHASE) or "",
        service=attributes.get(FAULT_SERVICE) or "",
        fault_type=attributes.get(FAULT_TYPE) or "",
        root_cause=attributes.get(ROOT_CAUSE) or "",
        risk=attributes.get(RISK_LEVEL) or "",
        outcome=attributes.get(OUTCOME) or "",
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


async def describe_healing(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    """The execution behind ``handle``, refused unless it is a healing."""
    description = await handle.describe()
    if description.workflow_type != WORKFLOW_TYPE:
        raise HealingNotFound(
            f"no healing with id {handle.id} (it is a {description.workflow_type})"
        )
    return description


async def fetch_status(client: Client, workflow_id: str) -> HealingStatus:
    """A running healing answers the ``status`` query; a finished one has it as its result."""
    handle = client.get_workflow_handle_for(HealingWorkflow.run, workflow_id)
    description = await describe_healing(handle)
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return await handle.result(follow_runs=False, rpc_timeout=WORKER_ANSWER_TIMEOUT)
    return await query_status(handle)


async def query_status(handle: WorkflowHandle[HealingWorkflow, HealingStatus]) -> HealingStatus:
    """The ``status`` query of a running healing; ``TemporalUnavailable`` when it fails."""
    try:
        return await handle.query(HealingWorkflow.status, rpc_timeout=WORKER_ANSWER_TIMEOUT)
    except WorkflowQueryFailedError as exc:
        raise TemporalUnavailable(f"the status query of {handle.id} failed: {exc}") from None


def update_failure_message(exc: WorkflowUpdateFailedError) -> str:
    """Why the workflow refused an update: its validator's own words when it gave some."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)
