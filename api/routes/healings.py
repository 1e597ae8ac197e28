"""Healings out: list, show, approve, reject (through the door), and the recent error spans."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from selfheal.api.deps import Approver, Decision, DecisionBody, IntakeDep, Reader
from selfheal.api.openapi import request_body
from selfheal.detection.parsers import ErrorSpan
from selfheal.domain import Approval, HealingStatus
from selfheal.healings import HealingRow

router = APIRouter(tags=["healings"])

Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")]
DECISION_BODY = request_body(DecisionBody, "why", "application/json")


@router.get("/v1/healings", response_model=list[HealingRow])
async def list_healings(
    intake: IntakeDep, _: Reader, phase: str | None = None, limit: Limit = 50
) -> list[HealingRow]:
    """Healings, newest first (a visibility query on HealingPhase)."""
    return await intake.door.list(phase, limit)


@router.get("/v1/healings/{workflow_id}", response_model=HealingStatus)
async def show_healing(workflow_id: str, intake: IntakeDep, _: Reader) -> HealingStatus:
    """One healing's status: phase, faults, diagnosis, plans, approval, steps, outcome."""
    return await intake.door.show(workflow_id)


@router.post(
    "/v1/healings/{workflow_id}/approve", response_model=Approval, openapi_extra=DECISION_BODY
)
async def approve(workflow_id: str, intake: IntakeDep, who: Approver, body: Decision) -> Approval:
    """Approve a healing awaiting approval; the approver is the token's identity."""
    return await intake.door.decide(workflow_id, "approve", by=who.identity, reason=body.reason)


@router.post(
    "/v1/healings/{workflow_id}/reject", response_model=Approval, openapi_extra=DECISION_BODY
)
async def reject(workflow_id: str, intake: IntakeDep, who: Approver, body: Decision) -> Approval:
    """Reject a healing awaiting approval: nothing is executed."""
    return await intake.door.decide(workflow_id, "reject", by=who.identity, reason=body.reason)


@router.get("/v1/traces/errors", response_model=list[ErrorSpan])
async def error_traces(
    intake: IntakeDep, _: Reader, service: str | None = None, limit: Limit = 50
) -> list[ErrorSpan]:
    """The most recent error spans this intake received, newest first (diagnosis reads the
    whole error traces from Postgres)."""
    return intake.traces.recent_errors(service, limit)
