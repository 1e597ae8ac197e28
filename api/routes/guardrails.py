"""The guardrails' kill switch over HTTP: read it, pause every healing's mutating steps, resume."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter

from selfheal.api.deps import Approver, Decision, IntakeDep, Reader
from selfheal.api.errors import HttpProblem
from selfheal.api.intake import Intake
from selfheal.api.routes.healings import DECISION_BODY
from selfheal.domain.kill_switch import KillSwitch, PauseState

router = APIRouter(tags=["guardrails"])
T = TypeVar("T")


async def _on_switch(intake: Intake, work: Callable[[KillSwitch], T]) -> T:
    """``work`` on the kill switch, off the event loop; 503 when there is none (a database
    failure is a KnowledgeBaseError: 503 too)."""
    switch = intake.deps.kill_switch
    if switch is None:
        raise HttpProblem(503, "no database configured on this intake")
    return await asyncio.to_thread(work, switch)


@router.get("/v1/guardrails", response_model=PauseState)
async def guardrails(intake: IntakeDep, _: Reader) -> PauseState:
    """The global kill switch: paused or not, and who changed it last, when and why."""
    return await _on_switch(intake, lambda switch: switch.state())


@router.post("/v1/guardrails/pause", response_model=PauseState, openapi_extra=DECISION_BODY)
async def pause(intake: IntakeDep, who: Approver, body: Decision) -> PauseState:
    """Stop every mutating step of every healing until resumed; by the token's identity."""
    reason = body.reason.strip()
    return await _on_switch(intake, lambda switch: switch.set(True, who.identity, reason))


@router.post("/v1/guardrails/resume", response_model=PauseState)
async def resume(intake: IntakeDep, who: Approver) -> PauseState:
    """Let healings act again; by the token's identity."""
    return await _on_switch(intake, lambda switch: switch.set(False, who.identity))
