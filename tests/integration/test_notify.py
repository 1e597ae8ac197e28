"""notify against a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.notify import NotifyActivities, summary_line
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import (
    ConfigError,
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingPhase,
    HealingStatus,
)
from selfheal.domain.payloads import NotifyInput
from tests.integration.demo_stack import free_port


@pytest.fixture(scope="module")
def received() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def receiver(received: list[dict[str, Any]]) -> Iterator[ServerHandle]:
    """Records what /hook/ok receives; /hook/{code} answers that code."""
    app = FastAPI()

    @app.post("/hook/{code}")
    async def hook(code: int, request: Request) -> JSONResponse:
        received.append({"body": await request.json(), "type": request.headers["content-type"]})
        return JSONResponse(status_code=code, content={"ok": code < 300})

    handle = serve_in_thread(app)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(autouse=True)
def clear(received: list[dict[str, Any]]) -> None:
    received.clear()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def healed_status() -> HealingStatus:
    fault = Fault(service="demo", type="health_check_failed", target="demo-target")
    return HealingStatus(
        workflow_id=fault.workflow_id,
        run_id="run-1",
        phase=HealingPhase.HEALED,
        fault=fault,
        diagnosis=Diagnosis(
            root_cause="bad_feature_flag", confidence=0.85, rule="bad-feature-flag"
        ),
        outcome=HealingOutcome.HEALED,
        outcome_detail="healthy for 30s\n(7 checks)",
        solution_name="disable-bad-flag",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        time_to_recover_s=12.34,
    )


async def notify(activities: NotifyActivities, status: HealingStatus, **extra: Any) -> bool:
    result: bool = await ActivityEnvironment().run(
        activities.notify, NotifyInput(status=status, extra=extra)
    )
    return result


async def test_posts_a_slack_compatible_summary_and_the_status(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(f"{receiver.url}/hook/200", http=http)
    status = healed_status()
    assert await notify(activities, status, channel="#sre") is True

    assert len(received) == 1
    body = received[0]["body"]
    assert received[0]["type"] == "application/json"
    assert body["text"] == (
        f":white_check_mark: {status.workflow_id} healed: demo/health_check_failed on "
        "demo-target — root cause bad_feature_flag (0.85) — via disable-bad-flag — recovered "
        "in 12.3s — healthy for 30s (7 checks)"
    )
    assert "\n" not in body["text"]
    assert HealingStatus.model_validate(body["healing"]) == status
    assert body["extra"] == {"channel": "#sre"}


async def test_without_a_webhook_nothing_is_sent(
    receiver: ServerHandle, received: list[dict[str, Any]]
) -> None:
    assert await notify(NotifyActivities(None), healed_status()) is False
    assert received == []


async def test_a_server_error_is_retryable(receiver: ServerHandle, http: httpx.AsyncClient) -> None:
    activities = NotifyActivities(f"{receiver.url}/hook/503", http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.type == "TargetError"
    assert info.value.non_retryable is False
    assert "HTTP 503" in str(info.value)
    assert "/hook/" not in str(info.value)  # webhook paths hold secrets


async def test_a_rejected_request_is_not_retried(
    receiver: ServerHandle, http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(f"{receiver.url}/hook/404", http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.non_retryable is True
    activities = NotifyActivities(f"{receiver.url}/hook/429", http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.non_retryable is False


async def test_an_unreachable_webhook_is_retryable(http: httpx.AsyncClient) -> None:
    activities = NotifyActivities(f"http://127.0.0.1:{free_port()}/secret-token", http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.non_retryable is False
    assert "secret-token" not in str(info.value)


@pytest.mark.parametrize("url", ["hooks.slack.com/x", "ftp://example.com/x", "http://"])
def test_a_webhook_url_that_is_not_http_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"notify\.webhook_url"):
        NotifyActivities(url)


def test_summary_of_a_healing_awaiting_approval() -> None:
    status = healed_status().model_copy(
        update={
            "phase": HealingPhase.AWAITING_APPROVAL,
            "outcome": None,
            "outcome_detail": "",
            "solution_name": None,
            "time_to_recover_s": None,
            "awaiting_approval": True,
            "approval_reasons": ["confidence 0.40 < 0.70", "risk <high>"],
        }
    )
    assert summary_line(status) == (
        f":raising_hand: {status.workflow_id} awaits approval: demo/health_check_failed on "
        "demo-target — root cause bad_feature_flag (0.85) — why: confidence 0.40 &lt; 0.70; "
        "risk &lt;high&gt;"
    )
