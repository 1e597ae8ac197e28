"""``http.degrade`` against the real demo target (its control endpoint), then whole healings of
the ``dependency_slow`` scenario with the real worker: one healed by the fallback, one whose
validation fails so that the compensation puts the switch back exactly as it was."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from selfheal.activities.actions import default_registry
from selfheal.activities.actions.degrade import HTTP_DEGRADE, DegradeParams
from selfheal.activities.actions.registry import ActionContext
from selfheal.core.settings import (
    EvidenceSettings,
    HealingSettings,
    Settings,
    SupervisorSettings,
)
from selfheal.domain import (
    Fault,
    HealingOutcome,
    HealingStatus,
    InvalidParams,
    RecoveryStep,
    SolutionSpec,
    StepStatus,
    TargetError,
)
from selfheal.healings.start import start_healing
from selfheal.models.catalog import load_catalog
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.worker import build_activities, build_worker
from tests.integration.demo_stack import (
    TARGET,
    DemoStack,
    demo_stack_with_evidence,
    wait_until,
)
from tests.integration.test_workflow_logic import status_when
from tests.support import runbooks_for, scratch_database, sessions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NORMAL = {"mode": "normal", "rate_limit_rps": None}
# A service of its own, so that only this solution is a candidate for it: rate limiting does
# not help a failing dependency, so its validation fails.
RATE_LIMIT_SERVICE = "demo-rate-limited"


@pytest.fixture
def target(
    tmp_path: Path, client: Client, kb_sessions: sessionmaker[Session]
) -> Iterator[DemoStack]:
    """The demo services, their evidence kept where the worker's providers read it."""
    with demo_stack_with_evidence(tmp_path, client, kb_sessions) as stack:
        yield stack


def control(target: DemoStack) -> dict[str, Any]:
    response = httpx.get(f"{target.target_url}/control/degradation", timeout=5)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def set_control(target: DemoStack, key: str, **state: Any) -> None:
    response = httpx.put(
        f"{target.target_url}/control/degradation",
        json=state,
        headers={"Idempotency-Key": key},
        timeout=5,
    )
    assert response.status_code == 200, response.text


def switch(data: dict[str, Any]) -> dict[str, Any]:
    return {"mode": data["mode"], "rate_limit_rps": data["rate_limit_rps"]}


def context(key: str) -> ActionContext:
    return ActionContext(idempotency_key=key, workflow_id="heal-x")


def params(target: DemoStack, **kw: Any) -> DegradeParams:
    return HTTP_DEGRADE.parse({"base_url": target.target_url, **kw})


# ------------------------------------------------------------------------------ the action


async def test_degrade_saves_the_state_and_its_compensation_restores_it_exactly(
    target: DemoStack,
) -> None:
    set_control(target, "operator", mode="rate_limit", rate_limit_rps=7.5)
    step = params(target, mode="fallback")

    output = await HTTP_DEGRADE.run(context("heal-x/run/0/0"), step)

    assert output["previous"] == {"mode": "rate_limit", "rate_limit_rps": 7.5}
    assert output["applied"] == {"mode": "fallback", "rate_limit_rps": None}
    assert switch(control(target)) == {"mode": "fallback", "rate_limit_rps": None}

    assert HTTP_DEGRADE.compensate is not None
    undone = await HTTP_DEGRADE.compensate(context("heal-x/run/0/0/undo"), step, output)

    assert undone["restored"] == {"mode": "rate_limit", "rate_limit_rps": 7.5}
    assert switch(control(target)) == {"mode": "rate_limit", "rate_limit_rps": 7.5}


async def test_a_retry_with_the_same_key_applies_once_and_keeps_the_first_previous(
    target: DemoStack,
) -> None:
    step = params(target, mode="circuit_break")

    first = await HTTP_DEGRADE.run(context("heal-x/run/0/1"), step)
    state = control(target)
    again = await HTTP_DEGRADE.run(context("heal-x/run/0/1"), step)

    assert first["previous"] == again["previous"] == NORMAL
    assert control(target) == state  # the repeated PUT changed nothing
    assert state["updated_by"] == "heal-x/run/0/1" and state["previous"] == NORMAL
    assert HTTP_DEGRADE.compensate is not None
    await HTTP_DEGRADE.compensate(context("heal-x/run/0/1/undo"), step, again)
    assert switch(control(target)) == NORMAL


async def test_another_healing_saves_the_state_it_finds(target: DemoStack) -> None:
    await HTTP_DEGRADE.run(context("heal-a/run/0/0"), params(target, mode="fallback"))

    later = await HTTP_DEGRADE.run(
        context("heal-b/run/0/0"), params(target, mode="rate_limit", rate_limit_rps=20)
    )

    assert later["previous"] == {"mode": "fallback", "rate_limit_rps": None}
    assert switch(control(target)) == {"mode": "rate_limit", "rate_limit_rps": 20}


async def test_a_service_without_the_control_endpoint_fails_without_retry(
    target: DemoStack,
) -> None:
    step = HTTP_DEGRADE.parse({"base_url": f"{target.target_url}/nothing", "mode": "fallback"})

    with pytest.raises(TargetError, match=r"GET .*/nothing/control/degradation: HTTP 404") as exc:
        await HTTP_DEGRADE.run(context("k"), step)

    assert exc.value.retryable is False


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"mode": "rate_limit"}, "mode rate_limit needs rate_limit_rps"),
        ({"mode": "fallback", "rate_limit_rps": 5}, "applies to mode rate_limit only"),
        ({"mode": "off"}, "mode: Input should be 'fallback', 'circuit_break' or 'rate_limit'"),
        ({"mode": "fallback", "base_url": "shop:8080"}, "base_url: Value error, expected an"),
    ],
)
def test_bad_params_name_the_field(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParams, match=f"http.degrade params: .*{message}"):
        HTTP_DEGRADE.parse({"base_url": "http://127.0.0.1:1", **given})


# ------------------------------------------------------------------ the demo target's switch


def test_the_modes_as_the_demo_target_serves_them(target: DemoStack) -> None:
    url = target.target_url
    target.inject("dependency_slow")
    assert httpx.get(url).status_code == 504  # checkout gave up waiting for inventory
    wait_until(lambda: target.health() == 503, what="checkout to fail its health check")

    set_control(target, "k1", mode="fallback")
    assert httpx.get(url).json() == {"order": "accepted", "fallback": True}
    wait_until(lambda: target.health() == 200, what="checkout to recover on its fallback")

    set_control(target, "k2", mode="circuit_break")
    assert httpx.get(url).status_code == 503
    wait_until(lambda: target.health() == 503, what="the open circuit to fail checkouts")

    set_control(target, "k3", mode="rate_limit", rate_limit_rps=1)
    statuses = [httpx.get(url).status_code for _ in range(4)]
    # shed above the rate (the synthetic traffic takes most of it), still failing below it
    assert 429 in statuses and set(statuses) <= {429, 504}
    metrics = httpx.get(f"{url}/metrics").text
    assert 'demo_degradation_mode{service="checkout",mode="rate_limit"} 1.0' in metrics


def test_the_switch_outlives_a_restart_and_rejects_bad_bodies(target: DemoStack) -> None:
    url = f"{target.target_url}/control/degradation"
    set_control(target, "k1", mode="fallback")
    target.supervisor.restart(TARGET, "test-restart")
    wait_until(lambda: target.health() == 200, what="the target to answer after its restart")
    assert switch(control(target))["mode"] == "fallback"

    wrong_mode = httpx.put(url, json={"mode": "off"})
    assert wrong_mode.status_code == 400 and wrong_mode.json()["field"] == "mode"
    no_rate = httpx.put(url, json={"mode": "rate_limit"})
    assert no_rate.status_code == 400 and no_rate.json()["field"] == "rate_limit_rps"


# ------------------------------------------------------------------------ whole healings


@pytest.fixture(scope="module")
def kb_sessions(postgres_admin_url: str) -> Iterator[sessionmaker[Session]]:
    """A database of its own: this module adds a solution the rest of the suite must not see."""
    with (
        scratch_database(postgres_admin_url, "selfheal_degrade") as url,
        sessions(url) as factory,
    ):
        kb = KnowledgeBase(factory)
        kb.import_solutions(load_catalog(REPO / "runbooks", registry=default_registry()))
        kb.import_solutions([rate_limit_solution()])
        yield factory


def rate_limit_solution() -> SolutionSpec:
    return SolutionSpec(
        name="rate-limit-on-slow-dependency",
        pattern="dependency_degraded",
        service=RATE_LIMIT_SERVICE,
        steps=[
            RecoveryStep(
                name="rate-limit",
                action="http.degrade",
                params={
                    "base_url": "${fault.labels.base_url}",
                    "mode": "rate_limit",
                    "rate_limit_rps": 50,
                },
            )
        ],
    )


@pytest_asyncio.fixture
async def healing_worker(
    client: Client,
    task_queue: str,
    target: DemoStack,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> AsyncIterator[None]:
    runbooks = runbooks_for(
        tmp_path / "runbooks",
        target.target_url,
        services=("checkout", RATE_LIMIT_SERVICE),
        inventory_url=target.inventory_url,
    )
    settings = Settings(
        runbooks_dir=runbooks,
        supervisor=SupervisorSettings(url=target.supervisor_url),
        healing=HealingSettings(
            stabilization_window_s=1.5, probe_interval_s=0.5, suppression_s=0, breaker_open_s=2
        ),
        evidence=EvidenceSettings(metrics_lead_s=2.0),  # the fault is reported seconds after
    )
    async with httpx.AsyncClient() as http:
        activities = build_activities(settings, session_factory=kb_sessions, http=http)
        async with build_worker(client, settings, activities=activities, task_queue=task_queue):
            yield


def fault_for(target: DemoStack, service: str = "checkout") -> Fault:
    return Fault(
        fingerprint=f"degrade-{uuid.uuid4().hex[:12]}",
        service=service,
        type="health_check_failed",
        target=TARGET,
        health_url=f"{target.target_url}/healthz",
        labels={"base_url": target.target_url},
        source="test",
    )


async def run_healing(client: Client, task_queue: str, fault: Fault) -> HealingStatus:
    started = await start_healing(client, fault, task_queue=task_queue)
    handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
    return await asyncio.wait_for(handle.result(), timeout=120)


@pytest.mark.usefixtures("healing_worker")
async def test_a_slow_dependency_is_healed_by_the_fallback_kept_as_a_breaker(
    client: Client, task_queue: str, target: DemoStack
) -> None:
    """The fallback heals checkout; the healing keeps it as a breaker. While inventory stays
    slow, a half-open trial (inventory's shallow probe answers, but with the switch restored
    checkout fails again) opens it again; once inventory recovers, the breaker closes: the
    switch is back to normal and checkout healthy."""
    target.inject("dependency_slow")
    wait_until(lambda: target.health() == 503, what="checkout to fail its health check")

    started = await start_healing(client, fault_for(target), task_queue=task_queue)
    handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
    await status_when(
        handle,
        lambda s: s.breaker is not None and "open again" in s.breaker.history[-1].detail,
        within_s=60,
    )
    assert switch(control(target)) == {"mode": "fallback", "rate_limit_rps": None}
    wait_until(lambda: target.health() == 200, what="checkout to recover on its fallback again")
    async with httpx.AsyncClient() as http:  # inventory recovers
        (await http.post(f"{target.inventory_url}/admin/reset", timeout=5)).raise_for_status()
    result = await asyncio.wait_for(handle.result(), timeout=120)

    assert result.diagnosis is not None
    assert result.diagnosis.root_cause == "dependency_degraded"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.solution_name == "degrade-to-fallback"
    forward = [s for s in result.steps if not s.compensation]
    assert {(s.action, s.status) for s in forward} == {("http.degrade", StepStatus.SUCCEEDED)}
    assert forward[0].output["previous"] == NORMAL
    assert result.breaker is not None and result.breaker.state == "closed"
    assert result.breaker.cycles >= 2  # one trial while inventory was still slow
    assert switch(control(target)) == NORMAL
    assert target.health() == 200
    assert target.restarts() == 0


@pytest.mark.usefixtures("healing_worker")
async def test_a_failed_validation_puts_the_switch_back_as_it_was(
    client: Client, task_queue: str, target: DemoStack
) -> None:
    set_control(target, "operator", mode="rate_limit", rate_limit_rps=3)
    target.inject("dependency_slow")
    wait_until(lambda: target.health() == 503, what="checkout to fail its health check")

    result = await run_healing(client, task_queue, fault_for(target, RATE_LIMIT_SERVICE))

    assert result.diagnosis is not None
    assert result.diagnosis.root_cause == "dependency_degraded"
    assert result.outcome != HealingOutcome.HEALED
    assert result.validations and not result.validations[-1].healthy
    forward = [s for s in result.steps if not s.compensation]
    undo = [s for s in result.steps if s.compensation]
    assert [(s.action, s.status) for s in forward] == [("http.degrade", StepStatus.SUCCEEDED)]
    assert forward[0].output["applied"] == {"mode": "rate_limit", "rate_limit_rps": 50}
    assert [(s.action, s.status) for s in undo] == [("http.degrade", StepStatus.COMPENSATED)]
    assert undo[0].output["restored"] == {"mode": "rate_limit", "rate_limit_rps": 3}
    assert switch(control(target)) == {"mode": "rate_limit", "rate_limit_rps": 3}
