"""Heartbeats for actions that wait: a worker that dies mid-step is noticed within seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from selfheal.activities.actions.registry import ActionContext

# Well under the workflow's step heartbeat timeout (15 s by default).
HEARTBEAT_EVERY_S = 2.0


@asynccontextmanager
async def heartbeating(ctx: ActionContext, *details: Any) -> AsyncIterator[None]:
    """Heartbeat every few seconds while the body awaits something slow."""

    async def beat() -> None:
        while True:
            ctx.heartbeat(*details)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
