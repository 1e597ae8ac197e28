"""Temporal's view of healings, shared by the HTTP intake and the CLI: the list filter, a row per
listed healing, one healing's status, and the message of a refused update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError

from selfheal.domain import HealingPhase, HealingStatus
from selfheal.domain.errors import IntakeError
from selfheal.workflows.contract import WORKFLOW_TYPE

__all__ = [
    "WORKER_ANSWER_TIMEOUT",
    "HealingLookupError",
    "HealingRow",
    "describe_healing",
    "fetch_status",
    "healing_row",
    "update_failure_message",
    "visibility_query",
]

# A query or update needs a worker to answer; without one the call would wait indefinitely.
WORKER_ANSWER_TIMEOUT = timedelta(seconds=15)


class HealingLookupError(IntakeError):
    """A healing that cannot be listed, found or asked. ``not_found``: no such healing;
    ``field``: the filter argument that is wrong (the message starts with ``<field>: ``);
    neither: the healing exists but did not answer."""

    def __init__(self, message: str, *, not_found: bool = False, field: str | None = None) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.field = field


@dataclass(frozen=True)
class HealingRow:
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


_KEYS = {
    name: SearchAttributeKey.for_keyword(name)
    for name in ("HealingPhase", "FaultService", "FaultType", "RootCause", "RiskLevel")
}
_OUTCOME_KEY = SearchAttributeKey.for_keyword("HealingOutcome")


def visibility_query(phase: str | None) -> str:
    """The list filter; ``phase`` is checked against the known phases (no query injection)."""
    query = f"WorkflowType='{WORKFLOW_TYPE}'"
    if phase is None:
        return query
    known = [p.value for p in HealingPhase]
    if phase not in known:
        raise HealingLookupError(
            f"phase: expected one of {', '.join(known)}; got {phase!r}", field="phase"
        )
    return f"{query} AND HealingPhase='{phase}'"


def healing_row(execution: WorkflowExecution) -> HealingRow:
    attributes = execution.typed_search_attributes

    def get(name: str) -> str:
        return attributes.get(_KEYS[name]) or ""

    return HealingRow(
        workflow_id=execution.id,
        status=execution.status.name if execution.status else "UNKNOWN",
        phase=get("HealingPhase"),
        service=get("FaultService"),
        fault_type=get("FaultType"),
        root_cause=get("RootCause"),
        risk=get("RiskLevel"),
        outcome=attributes.get(_OUTCOME_KEY) or "",
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


async def describe_healing(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    """The execution behind ``handle``, refused unless it is a healing."""
    description = await handle.describe()
    if description.workflow_type != WORKFLOW_TYPE:
        raise HealingLookupError(
            f"no healing with id {handle.id} (it is a {description.workflow_type})",
            not_found=True,
        )
    return description


async def fetch_status(client: Client, workflow_id: str) -> HealingStatus:
    """A running healing answers the ``status`` query; a finished one has it as its result."""
    handle: WorkflowHandle[Any, HealingStatus] = client.get_workflow_handle(
        workflow_id, result_type=HealingStatus
    )
    description = await describe_healing(handle)
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return await handle.result(follow_runs=False, rpc_timeout=WORKER_ANSWER_TIMEOUT)
    try:
        status: HealingStatus = await handle.query(
            "status", result_type=HealingStatus, rpc_timeout=WORKER_ANSWER_TIMEOUT
        )
    except WorkflowQueryFailedError as exc:
        raise HealingLookupError(f"the status query of {workflow_id} failed: {exc}") from None
    return status


def update_failure_message(exc: WorkflowUpdateFailedError) -> str:
    """Why the workflow refused an update: its validator's own words when it gave some."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)
