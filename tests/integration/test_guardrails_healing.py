"""Every guardrail refusing a step in a real healing: the real HealingWorkflow on the dev server
with the real guardrail activities (``check_guardrails``, ``release_target``) on real Postgres.

The other activities are the journaling stand-ins of standins.py, except in the dry run, which
heals the real demo target with the real worker and shows that nothing about it changed.
Every test heals a service of its own (fresh targets, budget and cooldown) and leaves the kill
switch off.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from selfheal.activities.actions import default_registry
from selfheal.activities.guardrails import GuardrailActivities
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
from selfheal.core.database import make_engine, make_session_factory
from selfheal.core.settings import (
    EvidenceSettings,
    GuardrailSettings,
    HealingSettings,
    Settings,
    SupervisorSettings,
)
from selfheal.devstack.supervisor import serve_in_thread
from selfheal.domain import (
    ApprovalDecision,
    Fault,
    HealingOutcome,
    HealingPolicy,
    HealingStatus,
    RecoveryPlan,
    RecoveryStep,
    RiskLevel,
    StepStatus,
)
from selfheal.healings.start import start_healing
from selfheal.models.catalog import load_catalog
from selfheal.models.guardrails import Guardrails, set_paused, target_key
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.worker import build_activities, build_worker, workflow_runner
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.demo_stack import (
    TARGET,
    demo_stack_with_evidence,
    wait_until,
)
from tests.integration.standins import Scenario
from tests.support import runbooks_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDIN_GUARDRAILS = {"check_guardrails", "release_target"}


@pytest.fixture(scope="module")
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    KnowledgeBase(factory).import_solutions(
        load_catalog(REPO / "runbooks", registry=default_registry())
    )
    try:
        yield factory
    finally:
        engine.dispose()


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> Iterator[Guardrails]:
    """The guardrails' storage; the kill switch is off after every test, whatever happened."""
    try:
        yield Guardrails(sessions)
    finally:
        set_paused(sessions, False, by="test-cleanup")


def service(**overrides: Any) -> ServiceSpec:
    """A service of its own for one test: nothing another test did counts against it."""
    fields: dict[str, Any] = {
        "name": f"guard-{uuid.uuid4().hex[:8]}",
        "targets": [TargetSpec(name="web", kind="process"), TargetSpec(name="api", kind="process")],
        "allowed_actions": ["process.*", "kubernetes.*", "wait"],
        "budget_per_hour": 100,
        "cooldown_s": 0,
        "max_pods_per_step": 1,
    }
    return ServiceSpec(**{**fields, **overrides})


def fault_of(spec: ServiceSpec, target: str = "web", **fields: Any) -> Fault:
    return Fault(
        fingerprint=f"guard-{uuid.uuid4().hex[:12]}",
        service=spec.name,
        type="health_check_failed",
        target=target,
        source="test",
        **fields,
    )


def step(name: str, action: str = "process.restart", **params: Any) -> RecoveryStep:
    return RecoveryStep(name=name, action=action, params=params or {"process": "${fault.target}"})


def candidate(name: str, *steps: RecoveryStep) -> RecoveryPlan:
    return RecoveryPlan(
        source="knowledge_base",
        solution_id=abs(hash(name)) % 10_000,
        solution_name=name,
        steps=list(steps),
        risk=RiskLevel.MEDIUM,
    )


def scenario(*plans: RecoveryPlan, step_delay_s: float = 0.0) -> Scenario:
    return Scenario(
        # The workflow's own bound on waiting is wider than any test's pause_wait_max_s, so
        # that the guardrails' answer (retry_after_s) decides when a wait ends.
        policy=HealingPolicy(stabilization_window_s=0, probe_interval_s=1, guardrail_wait_max_s=60),
        plans=list(plans) or [candidate("restart", step("restart"))],
        step_delay_s=step_delay_s,
    )


@asynccontextmanager
async def guarded_worker(
    client: Client,
    task_queue: str,
    sessions: sessionmaker[Session],
    spec: ServiceSpec,
    world: Scenario,
    settings: GuardrailSettings | None = None,
) -> AsyncIterator[None]:
    """The stand-in activities, but the real guardrails over a catalog of ``spec`` only."""
    async with httpx.AsyncClient() as http:
        guardrails = GuardrailActivities(
            sessions,
            ServiceCatalog(services=[spec]),
            settings or GuardrailSettings(),
            default_registry(),
            http=http,
            probe_timeout_s=1.0,
        )
        standins = [a for a in world.activities() if a.__name__ not in STANDIN_GUARDRAILS]
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[HealingWorkflow],
            activities=[*standins, guardrails.check_guardrails, guardrails.release_target],
            workflow_runner=workflow_runner(),
        ):
            yield


async def start(
    client: Client, task_queue: str, fault: Fault, **kwargs: bool
) -> WorkflowHandle[Any, HealingStatus]:
    started = await start_healing(client, fault, task_queue=task_queue, **kwargs)
    return client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)


async def heal(client: Client, task_queue: str, fault: Fault, **kwargs: bool) -> HealingStatus:
    handle = await start(client, task_queue, fault, **kwargs)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def status_when(
    handle: WorkflowHandle[Any, HealingStatus],
    predicate: Callable[[HealingStatus], bool],
    within_s: float = 20,
) -> HealingStatus:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status: HealingStatus = await handle.query("status", result_type=HealingStatus)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never matched; last: {status.model_dump_json()}")
        await asyncio.sleep(0.1)


def ran(world: Scenario) -> list[str]:
    return [entry for entry in world.journal if entry.startswith("run:")]


def only_refusal(status: HealingStatus, rule: str) -> str:
    """The healing's single refused step; its error, which must name ``rule`` first."""
    [refused] = [s for s in status.steps if s.status == StepStatus.REFUSED]
    assert refused.error is not None and refused.error.startswith(f"{rule}: "), refused.error
    return refused.error


# -- at the start of a healing ----------------------------------------------------------------


async def test_kill_switch_set_to_escalate_stops_the_healing_before_any_step(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec, world = service(), scenario()
    set_paused(sessions, True, by="oncall", reason="maintenance")
    settings = GuardrailSettings(paused_behavior="escalate")
    async with guarded_worker(client, task_queue, sessions, spec, world, settings):
        result = await heal(client, task_queue, fault_of(spec))

    assert result.outcome == HealingOutcome.ESCALATED, result.outcome_detail
    assert result.outcome_detail.startswith("guardrail kill_switch: selfheal is paused by oncall")
    assert "maintenance" in result.outcome_detail
    assert result.steps == [] and ran(world) == []
    assert [(d.rule, d.allowed) for d in store.decisions(result.workflow_id)] == [
        ("kill_switch", False)
    ]


async def test_kill_switch_set_to_wait_holds_the_healing_until_resume(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec, world = service(), scenario()
    set_paused(sessions, True, by="oncall")
    # The first re-check comes pause_wait_max_s after the first refusal: short, so the test is.
    settings = GuardrailSettings(paused_behavior="wait", pause_wait_max_s=4)
    async with guarded_worker(client, task_queue, sessions, spec, world, settings):
        handle = await start(client, task_queue, fault_of(spec))
        waiting = await status_when(handle, lambda s: s.waiting_on is not None)
        assert waiting.waiting_on is not None and waiting.waiting_on.startswith("kill_switch: ")
        assert waiting.outcome is None and ran(world) == []

        set_paused(sessions, False, by="oncall")
        result = await asyncio.wait_for(handle.result(), timeout=30)

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.waiting_on is None
    assert ran(world) == ["run:restart"]
    rules = [
        (d.rule, d.allowed) for d in store.decisions(result.workflow_id) if d.step_order is None
    ]
    assert rules == [("kill_switch", False), ("", True)]


async def test_kill_switch_set_to_wait_escalates_once_the_wait_is_over(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec, world = service(), scenario()
    set_paused(sessions, True, by="oncall")
    settings = GuardrailSettings(paused_behavior="wait", pause_wait_max_s=1)
    async with guarded_worker(client, task_queue, sessions, spec, world, settings):
        result = await heal(client, task_queue, fault_of(spec))

    assert result.outcome == HealingOutcome.ESCALATED, result.outcome_detail
    assert result.outcome_detail.startswith("guardrail kill_switch: ")
    assert "giving up" in result.outcome_detail
    assert result.steps == [] and ran(world) == []


async def test_a_new_fault_on_a_target_within_its_cooldown_is_escalated(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec, world = service(cooldown_s=600), scenario()
    async with guarded_worker(client, task_queue, sessions, spec, world):
        first = await heal(client, task_queue, fault_of(spec, "web"))
        assert first.outcome == HealingOutcome.HEALED, first.outcome_detail
        assert ran(world) == ["run:restart"]

        second = await heal(client, task_queue, fault_of(spec, "web"))

    assert second.outcome == HealingOutcome.ESCALATED, second.outcome_detail
    assert second.outcome_detail.startswith(
        f"guardrail cooldown: {target_key(spec.name, 'web')} was healed by {first.workflow_id}"
    )
    assert second.steps == [] and ran(world) == ["run:restart"]  # the second ran nothing
    assert store.lock_holder(target_key(spec.name, "web")) is None


async def test_the_healing_past_the_services_hourly_budget_is_escalated(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec, world = service(budget_per_hour=1), scenario()
    async with guarded_worker(client, task_queue, sessions, spec, world):
        first = await heal(client, task_queue, fault_of(spec, "web"))
        assert first.outcome == HealingOutcome.HEALED, first.outcome_detail

        # Another target of the same service: no cooldown applies, only the budget.
        second = await heal(client, task_queue, fault_of(spec, "api"))

    assert second.outcome == HealingOutcome.ESCALATED, second.outcome_detail
    assert second.outcome_detail.startswith(
        f"guardrail budget: 1 healings of {spec.name} acted within the last hour"
    )
    assert second.steps == [] and ran(world) == ["run:restart"]


# -- before a step ----------------------------------------------------------------------------


async def test_an_action_outside_the_allowlist_is_refused_and_the_next_candidate_runs(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec = service(allowed_actions=["process.*"])
    world = scenario(
        candidate("drop-keys", step("drop", "redis.delete_keys", pattern="session:*")),
        candidate("restart", step("restart")),
    )
    async with guarded_worker(client, task_queue, sessions, spec, world):
        result = await heal(client, task_queue, fault_of(spec))

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.solution_name == "restart"
    error = only_refusal(result, "allowlist")
    assert "redis.delete_keys is not allowed" in error
    assert [(s.candidate, s.name, s.status) for s in result.steps] == [
        (0, "drop", StepStatus.REFUSED),
        (1, "restart", StepStatus.SUCCEEDED),
    ]
    assert ran(world) == ["run:restart"]
    # A refusal is not a failed attempt of the refused solution.
    [recorded] = world.recorded
    assert [(a.solution_name, a.succeeded) for a in recorded.attempts] == [("restart", True)]


async def test_a_step_above_the_blast_radius_is_refused_and_the_next_candidate_runs(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec = service(max_pods_per_step=1)
    world = scenario(
        candidate(
            "delete-many", step("delete-5", "kubernetes.delete_pod", selector="a=b", max_pods=5)
        ),
        candidate(
            "delete-one", step("delete-1", "kubernetes.delete_pod", selector="a=b", max_pods=1)
        ),
    )
    async with guarded_worker(client, task_queue, sessions, spec, world):
        result = await heal(client, task_queue, fault_of(spec))

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.solution_name == "delete-one"
    error = only_refusal(result, "blast_radius")
    assert "kubernetes.delete_pod may touch 5 pods in one step" in error
    assert ran(world) == ["run:delete-1"]  # the refused step never reached the cluster


async def test_a_busy_target_holds_the_second_healing_until_the_first_releases_it(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec = service()
    world = scenario(step_delay_s=1.5)
    # The second healing re-checks once, pause_wait_max_s after its first refusal: long enough
    # for the first to finish its 1.5 s step and release the target, even on a busy machine.
    settings = GuardrailSettings(pause_wait_max_s=8)
    async with guarded_worker(client, task_queue, sessions, spec, world, settings):
        first = await start(client, task_queue, fault_of(spec, "web"))
        await asyncio.wait_for(world.step_started.wait(), timeout=20)
        second = await start(client, task_queue, fault_of(spec, "web"))
        waiting = await status_when(second, lambda s: s.waiting_on is not None)
        assert waiting.waiting_on is not None and waiting.waiting_on.startswith(
            f"target_busy: {target_key(spec.name, 'web')} is being healed by {first.id}"
        )
        assert ran(world) == ["run:restart"]  # only the first acts

        done_first = await asyncio.wait_for(first.result(), timeout=30)
        done_second = await asyncio.wait_for(second.result(), timeout=30)

    assert done_first.outcome == done_second.outcome == HealingOutcome.HEALED
    assert ran(world) == ["run:restart", "run:restart"]
    assert done_second.steps[0].started_at >= done_first.steps[0].ended_at
    assert [s.status for s in done_second.steps] == [StepStatus.SUCCEEDED]
    # the second healing waits at its start check (the first holds the target from planning)
    assert [(d.step_order, d.allowed, d.rule) for d in store.decisions(second.id)] == [
        (None, False, "target_busy"),
        (None, True, ""),
        (0, True, ""),
    ]
    assert store.lock_holder(target_key(spec.name, "web")) is None


@pytest.fixture(scope="module")
def healthy_url() -> Iterator[str]:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    handle = serve_in_thread(app)
    try:
        yield f"{handle.url}/healthz"
    finally:
        handle.stop()


async def test_a_fault_that_no_longer_fires_ends_the_healing_before_any_action(
    client: Client,
    task_queue: str,
    sessions: sessionmaker[Session],
    store: Guardrails,
    healthy_url: str,
) -> None:
    spec, world = service(), scenario()
    async with guarded_worker(client, task_queue, sessions, spec, world):
        result = await heal(client, task_queue, fault_of(spec, health_url=healthy_url))

    assert result.outcome == HealingOutcome.RESOLVED_BEFORE_ACTION, result.outcome_detail
    error = only_refusal(result, "fault_resolved")
    assert f"{healthy_url} answers" in error
    assert result.resolved_at is not None
    assert ran(world) == [] and result.validations == []
    assert store.lock_holder(target_key(spec.name, "web")) is None


# -- dry runs ---------------------------------------------------------------------------------


async def test_a_dry_run_shows_a_refused_step_goes_on_and_does_not_count_as_acting(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    spec = service(allowed_actions=["process.*"], budget_per_hour=1)
    world = scenario(
        candidate(
            "drop-then-restart",
            step("drop", "redis.delete_keys", pattern="session:*"),
            step("restart"),
        ),
        candidate("restart", step("restart")),
    )
    async with guarded_worker(client, task_queue, sessions, spec, world):
        dry = await heal(client, task_queue, fault_of(spec), dry_run=True)
        # The dry run took no place in the budget of one: a real healing still may act.
        real = await heal(client, task_queue, fault_of(spec, "api"))

    assert dry.outcome == HealingOutcome.DRY_RUN, dry.outcome_detail
    only_refusal(dry, "allowlist")
    assert [(s.name, s.status) for s in dry.steps] == [
        ("drop", StepStatus.REFUSED),
        ("restart", StepStatus.DRY_RUN),
    ]
    assert all(d.dry_run for d in store.decisions(dry.workflow_id))
    assert real.outcome == HealingOutcome.HEALED, real.outcome_detail
    assert real.solution_name == "restart"


def flag(base_url: str) -> bool:
    response = httpx.get(f"{base_url}/flags/new_checkout", timeout=5)
    assert response.status_code == 200, response.text
    enabled: bool = response.json()["enabled"]
    return enabled


async def test_a_dry_run_shows_the_step_it_would_run_and_touches_nothing(
    client: Client,
    task_queue: str,
    sessions: sessionmaker[Session],
    store: Guardrails,
    tmp_path: Path,
) -> None:
    kb = KnowledgeBase(sessions)
    before = {s.name: (s.attempts, s.successes) for s in kb.list_solutions()}
    with demo_stack_with_evidence(tmp_path / "stack", client, sessions) as target:
        target.inject("error_burst")
        wait_until(lambda: target.health() == 503, what="the error burst")
        assert flag(target.target_url)
        settings = Settings(
            runbooks_dir=runbooks_for(tmp_path / "runbooks", target.target_url),
            supervisor=SupervisorSettings(url=target.supervisor_url),
            healing=HealingSettings(
                stabilization_window_s=1.5, probe_interval_s=0.5, suppression_s=0
            ),
            evidence=EvidenceSettings(metrics_lead_s=2.0),
        )
        fault = Fault(
            fingerprint=f"guard-dry-{uuid.uuid4().hex[:12]}",
            service="checkout",
            type="health_check_failed",
            target=TARGET,
            health_url=f"{target.target_url}/healthz",
            labels={"base_url": target.target_url},
            source="test",
        )
        async with httpx.AsyncClient() as http:
            activities = build_activities(settings, session_factory=sessions, http=http)
            async with build_worker(client, settings, activities=activities, task_queue=task_queue):
                result = await heal(client, task_queue, fault, dry_run=True)

        assert result.dry_run
        assert result.outcome == HealingOutcome.DRY_RUN, result.outcome_detail
        assert result.solution_name == "disable-bad-flag"
        assert result.outcome_detail == "dry run: disable-bad-flag would run 2 step(s)"
        assert [(s.name, s.action, s.status) for s in result.steps] == [
            ("disable-new-checkout", "http.request", StepStatus.DRY_RUN),
            ("settle", "wait", StepStatus.DRY_RUN),
        ]
        assert result.validations == []
        assert flag(target.target_url)  # still on
        assert target.health() == 503
        assert target.restarts() == 0

    after = {s.name: (s.attempts, s.successes) for s in kb.list_solutions()}
    assert after == before
    decisions = store.decisions(result.workflow_id)
    assert decisions and all(d.dry_run and d.allowed for d in decisions)
    assert store.lock_holder(target_key("checkout", TARGET)) is None


async def test_a_pending_approval_holds_its_target(
    client: Client, task_queue: str, sessions: sessionmaker[Session], store: Guardrails
) -> None:
    """Issue 10 §7: while a healing waits for approval, another fault of the same target (with
    another fingerprint) waits too and acts on nothing until the first is decided."""
    spec = service(cooldown_s=600)
    world = scenario()
    settings = GuardrailSettings(pause_wait_max_s=30)
    async with guarded_worker(client, task_queue, sessions, spec, world, settings):
        first = await start(client, task_queue, fault_of(spec, "web"), require_approval=True)
        await status_when(first, lambda s: s.awaiting_approval)
        second = await start(client, task_queue, fault_of(spec, "web"))
        waiting = await status_when(second, lambda s: s.waiting_on is not None)
        assert waiting.waiting_on is not None and waiting.waiting_on.startswith(
            f"target_busy: {target_key(spec.name, 'web')} is being healed by {first.id}"
        )
        assert ran(world) == []
        await first.execute_update(
            HealingWorkflow.reject, ApprovalDecision(by="alice", reason="no")
        )
        done_first = await asyncio.wait_for(first.result(), timeout=30)
        done_second = await asyncio.wait_for(second.result(), timeout=60)
    assert done_first.outcome == HealingOutcome.REJECTED
    # the rejected healing never acted: no cooldown, the waiting one heals
    assert done_second.outcome == HealingOutcome.HEALED, done_second.outcome_detail
    assert ran(world) == ["run:restart"]
    assert store.lock_holder(target_key(spec.name, "web")) is None
