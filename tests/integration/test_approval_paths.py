"""No way of starting a healing skips an approval the service requires (issue 10 §5).

The demo target is crashed, and its service in ``services.yaml`` says that a plan with a
``process.*`` action always needs approval, and that only ``name:alice`` may decide. Then one
healing of it is started through each way in: the intake's fault route, its Alertmanager
webhook, ``selfheal fault submit``, the health watcher, signal-with-start straight to Temporal
(bypassing the door, without ``require_approval``), and a Temporal Schedule whose action starts
the workflow. None of them asks for approval, so only the worker's policy can stop the restart.

Everything is real: the dev server, Postgres (the knowledge base loaded from runbooks/), the
worker built as ``selfheal worker`` builds it, the intake app, the supervisor and the demo
process. The worker's own thresholds are opened (any risk, any confidence passes), so that the
service's ``always`` is the only reason to ask: were it skipped, the target would be restarted.
Each healing must wait in ``awaiting_approval`` with that reason, having run nothing; refuse a
decision from anyone but alice; and end ``rejected`` when alice rejects it, the target still down.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleSpec,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError
from typer.testing import CliRunner

from selfheal.activities.actions import default_registry
from selfheal.api.app import IntakeDeps, create_app
from selfheal.cli.main import app as cli_app
from selfheal.core.catalog import load_services
from selfheal.core.settings import IntakeSettings, Settings, get_settings
from selfheal.detection.health import WatchTarget
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import (
    ApprovalDecision,
    FaultUpdate,
    HealingInput,
    HealingOutcome,
    HealingPhase,
    HealingStatus,
    RiskLevel,
)
from selfheal.healings import Healings
from selfheal.healings.queries import update_failure_message
from selfheal.models.catalog import load_catalog
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.worker import build_activities, build_worker
from selfheal.workflows.contract import SIGNAL_FAULT_UPDATE
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.demo_stack import TARGET, DemoStack, demo_stack, wait_until
from tests.integration.test_doors import started_input
from tests.integration.test_healing_e2e import fault_for, settings_for
from tests.integration.test_workflow_logic import status_when
from tests.support import runbooks_for, scratch_database, sessions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kb_sessions(postgres_admin_url: str) -> Iterator[sessionmaker[Session]]:
    """A database of its own: a healing of checkout that a path leaves awaiting approval holds
    its target (guardrails), and must not hold it for the other modules' healings."""
    with (
        scratch_database(postgres_admin_url, "selfheal_approval_paths") as url,
        sessions(url) as factory,
    ):
        KnowledgeBase(factory).import_solutions(
            load_catalog(
                Path(__file__).resolve().parents[2] / "runbooks", registry=default_registry()
            )
        )
        yield factory


ALICE = "name:alice"
POLICY_REASON = "action process.restart always needs approval (service policy)"
TOKENS = {
    "ingest-token": ["ingest"],
    "alice-token": ["approve", ALICE],
    "bob-token": ["approve", "name:bob"],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Stage:
    client: Client
    task_queue: str
    target: DemoStack
    door: Healings
    api: httpx.AsyncClient

    def fault_body(self) -> dict[str, str]:
        """A fault as a person or a script reports it: no safety flag, nothing about where to
        act but the service and target (the catalog says the rest)."""
        return {
            "fingerprint": f"paths-{uuid.uuid4().hex[:12]}",
            "service": "checkout",
            "type": "health_check_failed",
            "target": TARGET,
            "summary": "checkout does not answer",
        }


def approval_runbooks(directory: Path, target_url: str) -> Path:
    """runbooks/ for the demo target, its service asking alice before any process action."""
    runbooks = runbooks_for(directory, target_url)
    path = runbooks / "services.yaml"
    catalog = json.loads(path.read_text())
    [checkout] = [s for s in catalog["services"] if s["name"] == "checkout"]
    checkout["approval"] = {"always": ["process.*"], "approvers": [ALICE]}
    path.write_text(json.dumps(catalog))
    return runbooks


def open_floor(settings: Settings) -> Settings:
    """The worker's own approval thresholds, opened: a medium-risk restart on a sure diagnosis
    goes ahead, so that only the service's policy can stop it."""
    healing = settings.healing.model_copy(
        update={
            "approval_min_risk": RiskLevel.CRITICAL,
            "approval_min_confidence": 0.0,
            "approval_margin": 0.0,
        }
    )
    return settings.model_copy(update={"healing": healing})


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoStack]:
    with demo_stack(tmp_path / "demo", traffic_rps=0) as stack:
        yield stack


@pytest_asyncio.fixture
async def stage(
    client: Client,
    task_queue: str,
    target: DemoStack,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stage]:
    runbooks = approval_runbooks(tmp_path / "runbooks", target.target_url)
    settings = open_floor(settings_for(target, runbooks))
    # the CLI builds its own door from the environment
    monkeypatch.setenv("SELFHEAL_TEMPORAL__ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("SELFHEAL_TEMPORAL__TASK_QUEUE", task_queue)
    monkeypatch.setenv("SELFHEAL_RUNBOOKS_DIR", str(runbooks))
    get_settings.cache_clear()
    door = Healings(client, load_services(runbooks / "services.yaml"), task_queue=task_queue)
    app = create_app(IntakeDeps(door=door, settings=IntakeSettings(tokens=TOKENS)))
    try:
        async with (
            httpx.AsyncClient() as http,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake"
            ) as api,
        ):
            activities = build_activities(settings, session_factory=kb_sessions, http=http)
            async with build_worker(client, settings, activities=activities, task_queue=task_queue):
                yield Stage(client, task_queue, target, door, api)
                # a failed test leaves its healing waiting: end it while the worker still runs
                async for execution in client.list_workflows(
                    f"TaskQueue='{task_queue}' AND ExecutionStatus='Running'"
                ):
                    try:
                        await client.get_workflow_handle(execution.id).terminate("test over")
                    except RPCError:
                        pass
    finally:
        get_settings.cache_clear()


# ------------------------------------------------------------------------------------ paths

StartPath = Callable[[Stage], Awaitable[str]]
"""Starts a healing of the crashed target one way, asking for nothing; its workflow id."""


async def http_fault(stage: Stage) -> str:
    response = await stage.api.post(
        "/v1/faults", json=stage.fault_body(), headers=bearer("ingest-token")
    )
    assert response.status_code == 200, response.text
    assert response.json()["started"]
    return str(response.json()["workflow_id"])


async def alertmanager(stage: Stage) -> str:
    alert = {
        "status": "firing",
        "labels": {"alertname": "health_check_failed", "service": "checkout", "target": TARGET},
        "annotations": {"summary": "checkout does not answer"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": uuid.uuid4().hex[:16],
    }
    body = {"version": "4", "status": "firing", "receiver": "selfheal", "alerts": [alert]}
    response = await stage.api.post("/v1/alertmanager", json=body, headers=bearer("ingest-token"))
    assert response.status_code == 200, response.text
    [workflow_id] = response.json()["started"]
    return str(workflow_id)


async def cli_submit(stage: Stage) -> str:
    stdin = json.dumps(stage.fault_body())
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["fault", "submit", "-"], input=stdin
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def watcher(stage: Stage) -> str:
    """selfheal dev's health watcher, probing the crashed target until it reports it."""
    watching = HealthWatcher(
        stage.door,
        WatchTarget(
            service="checkout", health_url=f"{stage.target.target_url}/healthz", target=TARGET
        ),
        interval_s=0.01,
        timeout_s=1.0,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(watching.failure_threshold):
            await watching.observe(await watching.check(http))
    [detection] = watching.detections
    return detection.workflow_id


async def signal_with_start(stage: Stage) -> str:
    """Straight to Temporal, as any client of the namespace could: no door, no catalog, and
    ``require_approval`` false."""
    fault = fault_for(stage.target)
    handle = await stage.client.start_workflow(
        HealingWorkflow.run,
        HealingInput(fault=fault, require_approval=False),
        id=fault.workflow_id,
        task_queue=stage.task_queue,
        start_signal=SIGNAL_FAULT_UPDATE,
        start_signal_args=[FaultUpdate(kind="fired", fault=fault, at=fault.detected_at)],
    )
    return handle.id


async def schedule(stage: Stage) -> str:
    """A Temporal Schedule whose action starts the workflow (no signal, no door), triggered
    once by hand."""
    fault = fault_for(stage.target)
    action = ScheduleActionStartWorkflow(
        HealingWorkflow.run,
        HealingInput(fault=fault),
        id=fault.workflow_id,
        task_queue=stage.task_queue,
    )
    handle = await stage.client.create_schedule(
        f"approval-paths-{uuid.uuid4().hex[:8]}", Schedule(action=action, spec=ScheduleSpec())
    )
    try:
        await handle.trigger()
        for _ in range(100):
            recent = (await handle.describe()).info.recent_actions
            if recent:
                started = recent[0].action
                assert isinstance(started, ScheduleActionExecutionStartWorkflow)
                # the schedule appends the time it acted to the id it was given
                assert started.workflow_id.startswith(fault.workflow_id)
                return started.workflow_id
            await asyncio.sleep(0.1)
        raise AssertionError("the schedule did not start its workflow within 10 s")
    finally:
        await handle.delete()


PATHS: dict[str, StartPath] = {
    "http_fault": http_fault,
    "alertmanager": alertmanager,
    "cli": cli_submit,
    "watcher": watcher,
    "signal_with_start": signal_with_start,
    "schedule": schedule,
}


# ------------------------------------------------------------------------------------- test


@pytest.mark.parametrize("path", list(PATHS))
async def test_no_start_path_skips_the_services_approval(
    stage: Stage, kb_sessions: sessionmaker[Session], path: str
) -> None:
    target = stage.target
    target.inject("crash")
    wait_until(lambda: target.health() is None, what="the target to crash")

    workflow_id = await PATHS[path](stage)

    given = await started_input(stage.client, workflow_id)
    assert not given.require_approval and not given.fault.require_approval
    assert not given.dry_run and not given.fault.dry_run
    handle = stage.client.get_workflow_handle_for(HealingWorkflow.run, workflow_id)
    waiting = await status_when(
        stage.client.get_workflow_handle(workflow_id),
        lambda s: s.awaiting_approval or s.outcome is not None,
    )
    assert waiting.phase == HealingPhase.AWAITING_APPROVAL, waiting.outcome_detail
    assert waiting.diagnosis is not None and waiting.diagnosis.root_cause == "process_crashed"
    assert waiting.approval_reasons == [POLICY_REASON]
    assert waiting.approvers == [ALICE]
    assert waiting.steps == [] and not waiting.dry_run
    assert target.restarts() == 0 and target.health() is None

    # anyone else is refused, by the workflow itself and through the intake
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            HealingWorkflow.approve, ApprovalDecision(by="name:bob", reason="looks fine")
        )
    assert update_failure_message(refused.value) == (
        f"'name:bob' may not decide this healing (approvers: {ALICE})"
    )
    response = await stage.api.post(
        f"/v1/healings/{workflow_id}/approve", json={}, headers=bearer("bob-token")
    )
    assert response.status_code == 409, response.text
    assert "may not decide" in response.json()["error"]
    still = await handle.query(HealingWorkflow.status)
    assert still.awaiting_approval and still.approval is None and still.steps == []

    response = await stage.api.post(
        f"/v1/healings/{workflow_id}/reject",
        json={"reason": "not now"},
        headers=bearer("alice-token"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["by"] == ALICE and response.json()["approved"] is False

    result: HealingStatus = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.outcome == HealingOutcome.REJECTED, result.outcome_detail
    assert result.approval is not None and result.approval.by == ALICE
    assert result.steps == []
    assert target.restarts() == 0 and target.health() is None
    record = KnowledgeBase(kb_sessions).get_healing(workflow_id)
    assert record is not None and record.outcome == "rejected" and record.steps == []
