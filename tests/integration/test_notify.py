"""notify against a real webhook and PagerDuty Events API receiver on 127.0.0.1, and on a real
Temporal worker for retries."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from selfheal.activities.notify import NotifyActivities, summary_line
from selfheal.core.settings import NotifySettings
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import (
    Approval,
    ConfigError,
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingPhase,
    HealingStatus,
    Hypothesis,
    MissingEvidence,
    RecoveryPlan,
    RecoveryStep,
    RiskLevel,
    StepResult,
    StepStatus,
    ValidationResult,
)
from selfheal.domain.criteria import (
    BreakerEvent,
    BreakerStatus,
    CriterionResult,
    GuardBreach,
)
from selfheal.domain.payloads import NotifyInput
from selfheal.worker.build import workflow_runner
from tests.integration.demo_stack import free_port

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
UI = "http://127.0.0.1:8233"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def received() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def receiver(received: list[dict[str, Any]]) -> Iterator[ServerHandle]:
    """Records every POST. ``/hook/{code}`` and ``/pd/{code}`` answer that code (PagerDuty's
    bodies, its 400 naming the routing key it was sent); ``/flaky/{name}/{fails}`` answers 503
    to the first ``fails`` requests of ``name``, then 202."""
    app = FastAPI()
    calls: dict[str, int] = {}

    async def record(request: Request) -> dict[str, Any]:
        body = await request.json()
        received.append(
            {"path": request.url.path, "body": body, "type": request.headers["content-type"]}
        )
        return dict(body)

    @app.post("/hook/{code}")
    async def hook(code: int, request: Request) -> JSONResponse:
        await record(request)
        if code == 400:
            return JSONResponse(status_code=400, content={"error": "invalid_blocks"})
        return JSONResponse(status_code=code, content={"ok": code < 300})

    @app.post("/pd/{code}")
    async def pagerduty(code: int, request: Request) -> JSONResponse:
        body = await record(request)
        if code == 400:
            problem = f"routing key {body.get('routing_key')} is not an integration key"
            content = {"status": "invalid event", "message": "Event object is invalid"}
            return JSONResponse(status_code=400, content={**content, "errors": [problem]})
        content = {"status": "success", "message": "Event processed", "dedup_key": "x"}
        return JSONResponse(status_code=code, content=content)

    @app.post("/flaky/{name}/{fails}")
    async def flaky(name: str, fails: int, request: Request) -> JSONResponse:
        await record(request)
        calls[name] = calls.get(name, 0) + 1
        code = 503 if calls[name] <= fails else 202
        return JSONResponse(status_code=code, content={"status": "ok" if code == 202 else "busy"})

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
        started_at=T0,
        time_to_recover_s=12.34,
    )


def escalated_status() -> HealingStatus:
    """A healing that tried two plans, undid the first, and gave up: everything a person
    taking over needs."""
    fault = Fault(
        service="checkout",
        type="high_error_rate",
        target="checkout-api",
        severity="critical",
        summary="5xx ratio 0.31 for 5m",
        labels={"alertname": "CheckoutErrors", "namespace": "shop", "cache_prefix": "internal"},
        fingerprint="checkout-errors-01",
    )
    step = RecoveryStep(name="flip flag", action="http.feature_flag")
    restart = RecoveryStep(name="restart pods", action="kubernetes.rollout_restart")
    return HealingStatus(
        workflow_id=fault.workflow_id,
        run_id="run-7",
        phase=HealingPhase.ESCALATED,
        fault=fault,
        diagnosis=Diagnosis(
            root_cause="bad_deploy",
            confidence=0.55,
            rule="recent-rollout",
            component="payments",
            hypotheses=[
                Hypothesis(
                    root_cause="bad_deploy",
                    component="payments",
                    confidence=0.55,
                    rule="recent-rollout",
                    summary="a rollout shortly before the errors",
                    evidence=[
                        "rule recent-rollout (0.60): kubernetes.rollout_age_s=120",
                        "+ traces trace_origin on payments (0.80): 42 of 50 error traces",
                    ],
                ),
                Hypothesis(
                    root_cause="db_pool_exhausted",
                    component="checkout",
                    confidence=0.30,
                    rule="pool",
                    evidence=["+ metrics metric_shift on checkout (0.40): pool_usage 0.97"],
                ),
            ],
            missing=[MissingEvidence(source="alerts", reason="Alertmanager timed out")],
        ),
        candidates=[
            RecoveryPlan(
                source="knowledge_base",
                solution_name="flag-off",
                steps=[step],
                risk=RiskLevel.MEDIUM,
            ),
            RecoveryPlan(
                source="rule_default",
                solution_name="restart",
                steps=[restart],
                risk=RiskLevel.HIGH,
            ),
        ],
        approval_required=True,
        approval_reasons=["risk high >= high"],
        approval=Approval(approved=True, by="alice", reason="go ahead", at=T0),
        steps=[
            StepResult.for_step(
                step,
                candidate=0,
                order=0,
                status=StepStatus.SUCCEEDED,
                started_at=T0,
                ended_at=T0,
            ),
            StepResult.for_step(
                step,
                candidate=0,
                order=0,
                status=StepStatus.COMPENSATED,
                compensation=True,
                started_at=T0,
                ended_at=T0,
            ),
            StepResult.for_step(
                restart,
                candidate=1,
                order=0,
                status=StepStatus.FAILED,
                error='deployments.apps "checkout-api" is forbidden',
                started_at=T0,
                ended_at=T0,
            ),
        ],
        validations=[
            ValidationResult(
                healthy=False,
                checks=6,
                failures=6,
                window_s=30,
                detail="error_ratio < 0.01 failed",
                criteria=[
                    CriterionResult(
                        criterion="error_ratio < 0.01",
                        kind="metric",
                        ok=False,
                        values=[0.31, 0.29, 0.2875],
                    ),
                    CriterionResult(
                        criterion="alert_resolved",
                        kind="alert_resolved",
                        ok=None,
                        optional=True,
                        detail="Alertmanager timed out",
                    ),
                ],
            )
        ],
        breaches=[
            GuardBreach(
                guard="latency_p99_rise",
                service="cart",
                expr="latency_p99 > 0.3",
                value=0.45,
                baseline=0.1,
                detail="cart depends on checkout",
            )
        ],
        breaker=BreakerStatus(
            state="open",
            step="degrade payments",
            dependency="payments",
            cycles=2,
            history=[
                BreakerEvent(state="open", at=T0, detail="degraded"),
                BreakerEvent(state="half_open", at=T0, detail="probe 1"),
                BreakerEvent(state="open", at=T0, detail="payments still failing"),
            ],
        ),
        outcome=HealingOutcome.ESCALATED,
        outcome_detail="all 2 candidates failed <see steps>",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=4),
    )


def settings(receiver: ServerHandle, *, hook: str | None = "hook/200", pd: str | None = None,
             ui: str | None = UI) -> NotifySettings:  # fmt: skip
    return NotifySettings(
        webhook_url=f"{receiver.url}/{hook}" if hook else None,
        pagerduty_routing_key=ROUTING_KEY if pd else None,
        pagerduty_url=f"{receiver.url}/{pd}" if pd else "https://events.pagerduty.com/v2/enqueue",
        temporal_ui_url=ui,
    )


async def notify(
    activities: NotifyActivities,
    status: HealingStatus,
    event: str = "outcome",
    env: ActivityEnvironment | None = None,
    **extra: Any,
) -> bool:
    result: bool = await (env or ActivityEnvironment()).run(
        activities.notify,
        NotifyInput(status=status, event=event, extra=extra),  # type: ignore[arg-type]
    )
    return result


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every text a person sees in the blocks."""
    out: list[str] = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        for item in [*block.get("fields", []), *block.get("elements", [])]:
            out.append(item["text"]["text"] if isinstance(item["text"], dict) else item["text"])
    return out


def by_path(received: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [r["body"] for r in received if r["path"].startswith(prefix)]


# ------------------------------------------------------------------------------------ Slack


async def test_posts_a_slack_compatible_summary_and_the_status(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver), http=http)
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
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][0]["text"]["text"].startswith(":white_check_mark: Healed: demo/")


async def test_slack_blocks_hand_an_escalation_over(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver), namespace="prod", http=http)
    status = escalated_status()
    assert await notify(activities, status) is True

    blocks = received[0]["body"]["blocks"]
    seen = "\n".join(texts(blocks))
    # the fault, with the labels that matter and without selfheal's internal ones
    assert "`checkout`" in seen and "`high_error_rate`" in seen and "critical" in seen
    assert "`alertname=CheckoutErrors`" in seen and "`namespace=shop`" in seen
    assert "cache_prefix" not in seen
    # the hypotheses, each with the evidence it rests on, and what could not be asked
    assert "*1. `bad_deploy` on `payments`* — 0.55" in seen
    assert "• + traces trace_origin on payments (0.80): 42 of 50 error traces" in seen
    assert "*2. `db_pool_exhausted` on `checkout`* — 0.30" in seen
    assert "pool_usage 0.97" in seen
    assert "`alerts`: Alertmanager timed out" in seen
    # what was tried: each plan's steps with their results, the undoing marked
    assert ":hammer_and_wrench: *Plan 1 of 2* `flag-off` (risk medium)" in seen
    assert "1. `flip flag` — `http.feature_flag` succeeded" in seen
    assert (
        ":leftwards_arrow_with_hook: undo 1. `flip flag` — `http.feature_flag` compensated" in seen
    )
    assert 'failed: deployments.apps "checkout-api" is forbidden' in seen
    # validations with each criterion's values; breaches; the breaker and its history
    assert "*Validation 1* not healthy: 6 checks, 6 failures over 30s" in seen
    assert ":x: `error_ratio &lt; 0.01` (metric) failed values 0.31, 0.29, 0.2875" in seen
    assert "`alert_resolved` (alert_resolved) not evaluated (optional)" in seen
    assert (
        "guard `latency_p99_rise` on `cart`: `latency_p99 &gt; 0.3` at 0.45 (baseline 0.1)" in seen
    )
    assert "*Breaker* over `degrade payments`: `open`, 2 half-open cycles" in seen
    assert "payments still failing" in seen
    # the approval and the outcome, escaped for Slack
    assert "approved by `alice`: go ahead" in seen
    assert "*Outcome* `escalated` — all 2 candidates failed &lt;see steps&gt;" in seen
    assert "<see" not in seen
    # the way to the workflow
    actions = [b for b in blocks if b["type"] == "actions"]
    assert actions[0]["elements"][0]["url"] == (
        f"{UI}/namespaces/prod/workflows/heal-checkout-errors-01/run-7/history"
    )


async def test_a_reminder_says_how_long_and_who_may_approve(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver, pd="pd/202"), http=http)
    status = escalated_status().model_copy(
        update={
            "phase": HealingPhase.AWAITING_APPROVAL,
            "outcome": None,
            "outcome_detail": "",
            "approval": None,
            "awaiting_approval": True,
            "awaiting_since": datetime.now(UTC) - timedelta(minutes=16),
            "approvers": ["alice", "bob"],
        }
    )
    assert await notify(activities, status, "reminder") is True

    assert by_path(received, "/pd/") == []  # a reminder does not page
    (body,) = by_path(received, "/hook/")
    assert f"{status.workflow_id} awaits approval for 16m: checkout/high_error_rate" in body["text"]
    assert "why: risk high &gt;= high — approvers: alice, bob" in body["text"]
    seen = "\n".join(texts(body["blocks"]))
    assert "*Approval waiting* for *16m*" in seen
    assert "who may approve: `alice`, `bob`" in seen
    assert f"selfheal approve {status.workflow_id} --by NAME" in seen


# -------------------------------------------------------------------------------- PagerDuty


async def test_an_escalation_triggers_pagerduty_deduplicated_by_fingerprint(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver, pd="pd/202"), namespace="prod", http=http)
    status = escalated_status()
    assert await notify(activities, status) is True

    assert len(by_path(received, "/hook/")) == 1
    (event,) = by_path(received, "/pd/")
    link = f"{UI}/namespaces/prod/workflows/heal-checkout-errors-01/run-7/history"
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "checkout-errors-01" == status.fault.fingerprint
    assert event["links"] == [{"href": link, "text": "heal-checkout-errors-01 in the Temporal UI"}]
    payload = event["payload"]
    assert payload["summary"].startswith(
        "heal-checkout-errors-01 escalated: checkout/high_error_rate on checkout-api — "
        "root cause bad_deploy (0.55)"
    )
    assert payload["summary"].endswith("all 2 candidates failed <see steps>")  # not escaped
    assert payload["source"] == "checkout/checkout-api"
    assert payload["severity"] == "critical"
    assert payload["component"] == "payments"  # the diagnosed component
    assert payload["group"] == "checkout"
    assert payload["class"] == "high_error_rate"
    details = payload["custom_details"]
    assert [h["root_cause"] for h in details["hypotheses"]] == ["bad_deploy", "db_pool_exhausted"]
    assert details["hypotheses"][0]["evidence"][1].startswith("+ traces trace_origin")
    assert [(s["name"], s["status"], s["compensation"]) for s in details["steps"]] == [
        ("flip flag", "succeeded", False),
        ("flip flag", "compensated", True),
        ("restart pods", "failed", False),
    ]
    assert details["steps"][2]["error"] == 'deployments.apps "checkout-api" is forbidden'
    assert details["validations"][0]["criteria"][0]["values"] == [0.31, 0.29, 0.2875]
    assert details["outcome"]["outcome"] == "escalated"
    assert details["workflow"] == {
        "id": "heal-checkout-errors-01",
        "run_id": "run-7",
        "url": link,
        "started_at": "2025-01-01 00:00:00Z",
        "ended_at": "2025-01-01 00:04:00Z",
    }
    assert details["breaches"][0]["guard"] == "latency_p99_rise"


@pytest.mark.parametrize(
    ("outcome", "severity", "expected"),
    [
        (HealingOutcome.FAILED, "warning", "warning"),
        (HealingOutcome.APPROVAL_TIMEOUT, "info", "info"),
    ],
)
async def test_failed_and_timed_out_healings_page_with_the_faults_severity(
    receiver: ServerHandle,
    received: list[dict[str, Any]],
    http: httpx.AsyncClient,
    outcome: HealingOutcome,
    severity: str,
    expected: str,
) -> None:
    activities = NotifyActivities(settings(receiver, hook=None, pd="pd/202"), http=http)
    status = escalated_status()
    status = status.model_copy(
        update={
            "outcome": outcome,
            "fault": status.fault.model_copy(update={"severity": severity}),
        }
    )
    assert await notify(activities, status) is True
    (event,) = by_path(received, "/pd/")
    assert event["event_action"] == "trigger"
    assert event["payload"]["severity"] == expected


async def test_resolved_resolves_the_pagerduty_alert(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver, pd="pd/202"), http=http)
    status = escalated_status().model_copy(update={"resolved_at": T0 + timedelta(minutes=9)})
    assert await notify(activities, status, "resolved") is True

    assert by_path(received, "/pd/") == [
        {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "checkout-errors-01"}
    ]
    (body,) = by_path(received, "/hook/")
    assert body["text"].startswith(
        ":large_green_circle: heal-checkout-errors-01 fault resolved (was escalated): "
    )
    assert "*The fault resolved* (2025-01-01 00:09:00Z)" in "\n".join(texts(body["blocks"]))


async def test_healed_and_rejected_healings_do_not_page(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    both = NotifyActivities(settings(receiver, pd="pd/202"), http=http)
    assert await notify(both, healed_status()) is True
    rejected = escalated_status().model_copy(update={"outcome": HealingOutcome.REJECTED})
    assert await notify(both, rejected) is True
    assert [r["path"] for r in received] == ["/hook/200", "/hook/200"]

    received.clear()
    only_pagerduty = NotifyActivities(settings(receiver, hook=None, pd="pd/202"), http=http)
    assert await notify(only_pagerduty, healed_status()) is False
    assert await notify(only_pagerduty, healed_status(), "reminder") is False
    assert received == []


# -------------------------------------------------------------------------------- bounds


async def test_a_huge_status_stays_within_slack_and_pagerduty_limits(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    status = escalated_status()
    big = "x&<" * 3000
    assert status.diagnosis is not None
    hypotheses = [
        Hypothesis(root_cause=f"cause{i}", component="c", confidence=0.1, summary=big,
                   evidence=[big] * 100)
        for i in range(60)
    ]  # fmt: skip
    step = RecoveryStep(name="s" * 500, action="http.feature_flag")
    steps = [
        StepResult.for_step(
            step, candidate=i % 7, order=i, status=StepStatus.FAILED, error=big,
            started_at=T0, ended_at=T0,
        )
        for i in range(400)
    ]  # fmt: skip
    criterion = CriterionResult(
        criterion=big, kind="metric", ok=False, values=[0.5] * 20, detail=big
    )
    validations = [
        ValidationResult(healthy=False, checks=1, failures=1, window_s=1, detail=big,
                         criteria=[criterion] * 60)
        for _ in range(30)
    ]  # fmt: skip
    huge = status.model_copy(
        update={
            "diagnosis": status.diagnosis.model_copy(update={"hypotheses": hypotheses}),
            "steps": steps,
            "validations": validations,
            "breaches": [status.breaches[0].model_copy(update={"detail": big})] * 200,
            "outcome_detail": big,
            "fault": status.fault.model_copy(update={"summary": big[:4000]}),
        }
    )
    activities = NotifyActivities(settings(receiver, pd="pd/202"), http=http)
    assert await notify(activities, huge) is True

    (slack,) = by_path(received, "/hook/")
    blocks = slack["blocks"]
    assert len(blocks) == 50
    assert blocks[-1]["type"] == "context" and "heal-checkout-errors-01" in str(blocks[-1])
    assert blocks[-2]["type"] == "actions"  # the link survives the cut
    assert "more blocks left out" in str(blocks[-3])
    assert len(slack["text"]) <= 3000
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        elif "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        for element in block.get("elements", []):
            text = element["text"]
            assert len(text["text"] if isinstance(text, dict) else text) <= 3000
    # no entity cut in half by the bounds
    assert all("&a…" not in t and "&l…" not in t and "&lt…" not in t for t in texts(blocks))

    (page,) = by_path(received, "/pd/")
    assert len(page["payload"]["summary"]) <= 1024
    assert len(json.dumps(page).encode()) < 512 * 1024
    details = page["payload"]["custom_details"]
    assert len(details["steps"]) == 50 and details["steps"][-1]["order"] == 399
    assert "left_out" in details


# -------------------------------------------------------------------------------- failures


async def test_without_any_destination_nothing_is_sent(
    receiver: ServerHandle, received: list[dict[str, Any]]
) -> None:
    assert await notify(NotifyActivities(NotifySettings()), healed_status()) is False
    assert await notify(NotifyActivities(NotifySettings()), escalated_status()) is False
    assert received == []


async def test_a_server_error_is_retryable(receiver: ServerHandle, http: httpx.AsyncClient) -> None:
    activities = NotifyActivities(settings(receiver, hook="hook/503"), http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.type == "TargetError"
    assert info.value.non_retryable is False
    assert info.value.message == "notification webhook 127.0.0.1 answered HTTP 503"
    assert "/hook/" not in str(info.value)  # webhook paths hold secrets


async def test_a_rejected_request_is_not_retried(
    receiver: ServerHandle, http: httpx.AsyncClient
) -> None:
    activities = NotifyActivities(settings(receiver, hook="hook/400"), http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.non_retryable is True
    assert info.value.message == "notification webhook 127.0.0.1 answered HTTP 400: invalid_blocks"
    activities = NotifyActivities(settings(receiver, hook="hook/429"), http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, healed_status())
    assert info.value.non_retryable is False


async def test_pagerduty_errors_name_the_host_never_the_routing_key(
    receiver: ServerHandle,
    received: list[dict[str, Any]],
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    activities = NotifyActivities(settings(receiver, pd="pd/400"), http=http)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, escalated_status())
    message = info.value.message
    assert info.value.non_retryable is True
    assert message.startswith("PagerDuty 127.0.0.1 answered HTTP 400: Event object is invalid")
    assert "routing key *** is not an integration key" in message
    assert ROUTING_KEY not in message
    assert ROUTING_KEY not in capsys.readouterr().err
    # the refusal did not keep the message from Slack
    assert len(by_path(received, "/hook/")) == 1


async def test_an_unreachable_destination_is_retryable(http: httpx.AsyncClient) -> None:
    port = free_port()
    activities = NotifyActivities(
        NotifySettings(
            webhook_url=f"http://127.0.0.1:{port}/secret-token",
            pagerduty_routing_key=ROUTING_KEY,
            pagerduty_url=f"http://localhost:{port}/v2/enqueue",
        ),
        http=http,
    )
    with pytest.raises(ApplicationError) as info:
        await notify(activities, escalated_status())
    assert info.value.non_retryable is False
    assert info.value.message == (
        "PagerDuty localhost: ConnectError; notification webhook 127.0.0.1: ConnectError"
    )


async def test_a_retry_does_not_post_again_where_the_message_was_taken(
    receiver: ServerHandle, received: list[dict[str, Any]], http: httpx.AsyncClient
) -> None:
    name = uuid.uuid4().hex
    activities = NotifyActivities(settings(receiver, pd=f"flaky/{name}/1"), http=http)
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    with pytest.raises(ApplicationError) as info:
        await notify(activities, escalated_status(), env=env)
    assert info.value.non_retryable is False
    assert beats[-1] == ({"slack": "sent"},)

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=list(beats[-1]))
    assert await notify(activities, escalated_status(), env=env) is True
    assert len(by_path(received, "/hook/")) == 1
    assert len(by_path(received, "/flaky/")) == 2


@workflow.defn(sandboxed=False)
class NotifyOnce:
    @workflow.run
    async def run(self, input: NotifyInput) -> bool:
        result: bool = await workflow.execute_activity(
            "notify",
            input,
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )
        return result


async def test_on_a_worker_a_retried_notification_reaches_slack_once(
    client: Client,
    task_queue: str,
    receiver: ServerHandle,
    received: list[dict[str, Any]],
    http: httpx.AsyncClient,
) -> None:
    """The heartbeat that remembers Slack took the message survives the failed attempt."""
    name = uuid.uuid4().hex
    activities = NotifyActivities(settings(receiver, pd=f"flaky/{name}/2"), http=http)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[NotifyOnce],
        activities=[activities.notify],
        workflow_runner=workflow_runner(),
    ):
        result = await client.execute_workflow(
            NotifyOnce.run,
            NotifyInput(status=escalated_status()),
            id=f"notify-{name}",
            task_queue=task_queue,
        )
    assert result is True
    assert len(by_path(received, "/flaky/")) == 3
    assert len(by_path(received, "/hook/")) == 1


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("webhook_url", "hooks.slack.com/x"),
        ("webhook_url", "ftp://example.com/x"),
        ("webhook_url", "http://"),
        ("pagerduty_url", "events.pagerduty.com/v2/enqueue"),
        ("temporal_ui_url", "localhost:8233"),
    ],
)
def test_a_url_that_is_not_http_is_a_config_error(field: str, url: str) -> None:
    with pytest.raises(ConfigError, match=rf"^notify\.{field}: expected an http"):
        NotifyActivities(NotifySettings.model_validate({field: url}))


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
