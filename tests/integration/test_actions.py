"""The actions called directly, against the real supervisor, demo target and a local echo
server."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from selfheal.activities.actions import SUPERVISOR_URL, ActionContext, default_registry
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import TargetError
from tests.integration.demo_stack import TARGET, DemoStack, demo_stack, free_port, wait_until

REGISTRY = default_registry()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    with demo_stack(tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def echo() -> Iterator[ServerHandle]:
    """Answers /status/{code} with that code and the request it saw."""
    app = FastAPI()

    @app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "DELETE"])
    async def status(code: int, request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        seen = {"method": request.method, "headers": dict(request.headers), "body": body}
        return JSONResponse(status_code=code, content=seen)

    handle = serve_in_thread(app)
    try:
        yield handle
    finally:
        handle.stop()


def context(key: str, services: dict[str, Any] | None = None) -> ActionContext:
    return ActionContext(
        idempotency_key=key, workflow_id=key.split("/")[0], services=services or {}
    )


async def run(name: str, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    action = REGISTRY.get(name)
    return await action.run(ctx, action.parse(params))


async def test_restart_heals_a_crashed_target_once_per_key(stack: DemoStack) -> None:
    stack.inject("crash")
    wait_until(lambda: stack.supervisor.status(TARGET).state == "exited", what="the crash")
    ctx = context("heal-a/0/0", {SUPERVISOR_URL: stack.supervisor_url})

    output = await run("process.restart", {"process": TARGET}, ctx)

    assert output["state"] == "running" and output["healthy"] is True
    assert output["restarts"] == 1 and output["replayed"] is False
    assert stack.health() == 200

    again = await run("process.restart", {"process": TARGET}, ctx)
    assert again["replayed"] is True and again["pid"] == output["pid"]
    assert stack.supervisor.status(TARGET).restarts == 1


async def test_restart_heartbeats_while_it_waits(stack: DemoStack) -> None:
    beats: list[Any] = []
    ctx = ActionContext(
        idempotency_key="heal-hb/0/0",
        workflow_id="heal-hb",
        heartbeat=lambda *details: beats.append(details),
        services={SUPERVISOR_URL: stack.supervisor_url},
    )
    await run("process.restart", {"process": TARGET}, ctx)
    assert beats, "no heartbeat while restarting"


async def test_restart_of_an_unknown_process_is_not_retried(stack: DemoStack) -> None:
    ctx = context("heal-b/0/0", {SUPERVISOR_URL: stack.supervisor_url})
    with pytest.raises(TargetError) as caught:
        await run("process.restart", {"process": "billing"}, ctx)
    assert not caught.value.retryable
    assert "'billing'" in str(caught.value) and TARGET in str(caught.value)


async def test_restart_reports_a_target_it_could_not_heal(stack: DemoStack) -> None:
    stack.inject("error_burst")  # lives in the state directory: a restart cannot heal it
    ctx = context("heal-c/0/0", {SUPERVISOR_URL: stack.supervisor_url})
    started = time.monotonic()

    output = await run("process.restart", {"process": TARGET}, ctx)

    # Back and serving, yet unhealthy: judging that is the validation's job, done without delay.
    assert time.monotonic() - started < 5
    assert output["state"] == "running" and output["healthy"] is False
    assert output["health"] == "HTTP 503"
    assert stack.supervisor.status(TARGET).restarts == 1


async def test_restart_of_a_process_that_never_serves_fails(stack: DemoStack) -> None:
    mute = [sys.executable, "-c", "import time; time.sleep(60)"]
    stack.supervisor.add("mute", mute, health_url=f"http://127.0.0.1:{free_port()}/healthz")
    ctx = context("heal-m/0/0", {SUPERVISOR_URL: stack.supervisor_url})
    with pytest.raises(TargetError, match=r"not serving within 0\.5s: unreachable") as caught:
        await run("process.restart", {"process": "mute", "wait_healthy_s": 0.5}, ctx)
    assert not caught.value.retryable
    assert stack.supervisor.status("mute").restarts == 1


async def test_restart_of_a_process_that_exits_again_fails(stack: DemoStack) -> None:
    stack.supervisor.add("doomed", [sys.executable, "-c", "import sys; sys.exit(4)"])
    ctx = context("heal-n/0/0", {SUPERVISOR_URL: stack.supervisor_url})
    with pytest.raises(TargetError, match=r"'doomed' exited after its restart \(exit code 4\)"):
        await run("process.restart", {"process": "doomed"}, ctx)


async def test_unreachable_supervisor_is_retryable() -> None:
    ctx = context("heal-d/0/0", {SUPERVISOR_URL: f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(TargetError, match="unreachable") as caught:
        await run("process.restart", {"process": TARGET}, ctx)
    assert caught.value.retryable


async def test_restart_without_a_supervisor_url_is_not_retried() -> None:
    with pytest.raises(TargetError, match="supervisor_url") as caught:
        await run("process.restart", {"process": TARGET}, context("heal-e/0/0"))
    assert not caught.value.retryable


async def test_http_request_flips_a_flag_on_the_target(stack: DemoStack) -> None:
    stack.inject("error_burst")
    params = {
        "method": "PUT",
        "url": f"{stack.target_url}/flags/new_checkout",
        "json": {"enabled": False},
    }
    output = await run("http.request", params, context("heal-f/0/0"))
    assert output["status_code"] == 200
    assert '"enabled": false' in output["body"]
    assert stack.health() == 200


async def test_http_request_sends_the_idempotency_key(echo: ServerHandle) -> None:
    params = {"method": "POST", "url": f"{echo.url}/status/201", "json": {"a": 1}}
    output = await run("http.request", params, context("heal-g/0/0"))
    seen = httpx.Response(200, content=output["body"]).json()
    assert output["status_code"] == 201
    assert seen["headers"]["idempotency-key"] == "heal-g/0/0"
    assert seen["body"] == '{"a":1}'


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (409, False)]
)
async def test_http_request_unexpected_status(
    echo: ServerHandle, status: int, retryable: bool
) -> None:
    params = {"method": "GET", "url": f"{echo.url}/status/{status}"}
    with pytest.raises(TargetError, match=f"HTTP {status}, expected 200-299") as caught:
        await run("http.request", params, context("heal-h/0/0"))
    assert caught.value.retryable is retryable


async def test_http_request_expected_status_is_configurable(echo: ServerHandle) -> None:
    params = {"method": "DELETE", "url": f"{echo.url}/status/404", "expect_status": [204, 404]}
    assert (await run("http.request", params, context("k")))["status_code"] == 404
    params = {"method": "GET", "url": f"{echo.url}/status/200", "expect_status": [204]}
    with pytest.raises(TargetError, match="expected 204") as caught:
        await run("http.request", params, context("k"))
    assert not caught.value.retryable


async def test_http_request_connection_refused_is_retryable() -> None:
    params = {"method": "GET", "url": f"http://127.0.0.1:{free_port()}/x", "timeout_s": 2}
    with pytest.raises(TargetError, match="ConnectError") as caught:
        await run("http.request", params, context("heal-i/0/0"))
    assert caught.value.retryable


async def test_wait_heartbeats_and_waits() -> None:
    beats: list[Any] = []
    ctx = ActionContext("k", "w", heartbeat=lambda *d: beats.append(d))
    started = time.monotonic()
    assert await run("wait", {"seconds": 0.3}, ctx) == {"waited_s": 0.3}
    assert time.monotonic() - started >= 0.3
    assert beats and "remaining_s" in beats[0][0]
