"""Temporal's view of healings: the list filter, a row per listed healing, one healing's status,
a pending approval as the list shows it, and why an update was refused. Used by the door
(``Healings``) and the CLI's rendering of what the door returns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
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
    "PendingApproval",
    "describe_healing",
    "fetch_status",
    "healing_row",
    "pending_approval",
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


class PendingApproval(HealingRow):
    """A healing listed as awaiting approval, with what its ``status`` query adds: how long it
    has waited and who may decide. Visibility lags the workflow, so a listed healing may have
    been decided (or have ended) since: ``detail`` then says so and nothing is waited."""

    awaiting_since: datetime | None = Field(
        default=None, description="when the healing asked for approval, as it recorded it"
    )
    waited_s: float | None = Field(
        default=None, description="how long it has waited; None: it no longer waits"
    )
    waited_since: Literal["asked", "started"] | None = Field(
        default=None,
        description="what waited_s counts from: when it asked, or (a healing started before "
        "healings recorded that, or one whose status did not answer) when it started",
    )
    approvers: list[str] | None = Field(
        default=None, description="who may decide; []: anyone; None: its status did not answer"
    )
    reasons: list[str] = Field(default_factory=list, description="why it asks")
    detail: str = Field(default="", description="why waited_s or approvers are missing")


def pending_approval(
    row: HealingRow, status: HealingStatus | None, now: datetime, *, detail: str = ""
) -> PendingApproval:
    """``row`` with its wait and approvers from ``status`` (None: the query was not asked or
    failed, ``detail`` says why)."""
    fields = row.model_dump()
    if row.status != "RUNNING":
        state = row.status.lower()
        return PendingApproval(**fields, detail=f"{state}: nothing to approve")
    if status is not None and not status.awaiting_approval:
        now_in = status.outcome.value if status.outcome is not None else status.phase.value
        return PendingApproval(**fields, detail=f"no longer awaiting approval ({now_in})")
    since = status.awaiting_since if status is not None else None
    start = since or (status.started_at if status is not None else row.started_at)
    return PendingApproval(
        **fields,
        awaiting_since=since,
        waited_s=None if start is None else max(0.0, (now - start).total_seconds()),
        waited_since=None if start is None else ("asked" if since is not None else "started"),
        approvers=None if status is None else list(status.approvers),
        reasons=[] if status is None else list(status.approval_reasons),
        detail=detail,
    )


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
