"""``process.restart``: restart a process through selfheal's supervisor.

The supervisor (``supervisor/``) applies each idempotency key at most once and answers a
repeated key with the earlier result, so a retried step, even on another worker after a crash,
restarts the process once.

The action then waits until the supervisor reports the process running and, when it has a
health URL, answering it. It does not wait for a 2xx: whether the restart healed the fault is
the validation's judgement (a restart cannot heal a poisoned cache that outlives it, and the
healing should learn that from validation quickly rather than from a step that waits out its
time). The output reports ``healthy`` as the supervisor saw it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from selfheal.activities.actions.heartbeat import heartbeating
from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel, TargetError

SUPERVISOR_URL = "supervisor_url"
IDEMPOTENCY_HEADER = "Idempotency-Key"
POLL_S = 0.2
SETTLE_S = 1.0
# A restart waits for the old process to stop (SIGTERM, then SIGKILL after a grace period).
RESTART_TIMEOUT_S = 60.0


class RestartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    process: str = Field(min_length=1, description="the supervisor's name for the process")
    wait_healthy_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="how long to wait for the process to run and answer its health URL",
    )


async def restart(ctx: ActionContext, params: RestartParams) -> Output:
    base_url = ctx.services.get(SUPERVISOR_URL)
    if not base_url:
        raise TargetError(
            f"process.restart needs the worker service {SUPERVISOR_URL!r} (the supervisor's URL)",
            retryable=False,
        )
    path = f"/processes/{quote(params.process, safe='')}"
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=str(base_url), timeout=RESTART_TIMEOUT_S) as client:
        async with heartbeating(ctx, {"restarting": params.process}):
            response = await _call(
                client, "POST", f"{path}/restart", headers={IDEMPOTENCY_HEADER: ctx.idempotency_key}
            )
        result = _json(response)
        status = await _wait_ready(client, ctx, params, path)
    return {
        "process": params.process,
        "pid": result.get("pid"),
        "restarts": result.get("restarts"),
        "restarted_at": result.get("restarted_at"),
        "replayed": bool(result.get("replayed")),
        "state": status.get("state"),
        "healthy": status.get("healthy"),
        "health": status.get("health_detail") or None,
        "waited_s": round(time.monotonic() - started, 3),
    }


async def _wait_ready(
    client: httpx.AsyncClient, ctx: ActionContext, params: RestartParams, path: str
) -> dict[str, Any]:
    deadline = time.monotonic() + params.wait_healthy_s
    # Without a health URL, "running" right after a start says little: a process that dies
    # on startup must be seen dying, so it has to stay up a moment first.
    settled = min(time.monotonic() + SETTLE_S, deadline)
    while True:
        status = _json(await _call(client, "GET", path))
        state = status.get("state")
        ctx.heartbeat({"process": params.process, "state": state})
        if state in ("exited", "stopped"):
            raise TargetError(
                f"process {params.process!r} {state} after its restart "
                f"(exit code {status.get('exit_code')})",
                retryable=False,
            )
        if state == "running":
            if status.get("health_url") is None:
                if time.monotonic() >= settled:
                    return status
            elif status.get("health_status") is not None:
                return status
        if time.monotonic() >= deadline:
            # The restart took place; retrying would only replay it and wait again.
            raise TargetError(
                f"process {params.process!r} restarted but was not serving within "
                f"{params.wait_healthy_s:g}s: {status.get('health_detail') or status.get('state')}",
                retryable=False,
            )
        await asyncio.sleep(POLL_S)


async def _call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    try:
        response = await client.request(method, path, headers=headers)
    except httpx.HTTPError as exc:
        raise TargetError(
            f"supervisor at {client.base_url} unreachable: {type(exc).__name__} {exc}".rstrip()
        ) from exc
    if response.is_success:
        return response
    detail = _json(response).get("error") or response.text[:200]
    raise TargetError(
        f"supervisor {method} {path}: HTTP {response.status_code}: {detail}",
        retryable=response.status_code >= 500,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


PROCESS_RESTART = Action(
    name="process.restart",
    params_model=RestartParams,
    risk=RiskLevel.MEDIUM,
    run=restart,
    compensable=False,
    idempotency="the supervisor applies each Idempotency-Key at most once",
    description="Restart a supervised process and wait until it is running and healthy.",
)
