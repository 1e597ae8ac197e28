"""``wait``: let the system settle between two steps (a cache warming up, a pool draining)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict, Field

from selfheal.activities.actions.heartbeat import HEARTBEAT_EVERY_S
from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel


class WaitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=3600, description="how long to wait")


async def wait(ctx: ActionContext, params: WaitParams) -> Output:
    deadline = time.monotonic() + params.seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ctx.heartbeat({"remaining_s": round(remaining, 1)})
        await asyncio.sleep(min(HEARTBEAT_EVERY_S, remaining))
    return {"waited_s": params.seconds}


WAIT = Action(
    name="wait",
    params_model=WaitParams,
    risk=RiskLevel.LOW,
    run=wait,
    mutating=False,
    idempotency="changes nothing; a retry waits again",
    description="Wait a number of seconds, heartbeating.",
)
