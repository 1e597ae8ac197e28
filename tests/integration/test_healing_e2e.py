"""Whole healings with the real activities: the real dev server, real Postgres knowledge base
loaded from runbooks/, selfheal's supervisor running the demo target as a real process, and
real HTTP probes. Also: a worker killed mid-step, and a record activity retried."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from selfheal.activities.actions import default_registry
from selfheal.activities.knowledge import KnowledgeBaseActivities
from selfheal.core.database import make_engine, make_session_factory
from selfheal.core.settings import (
    EvidenceSettings,
    HealingSettings,
    Settings,
    SupervisorSettings,
)
from selfheal.domain import Fault, HealingOutcome, HealingStatus, MetricCheck, StepStatus
from selfheal.domain.payloads import RecordOutcomeInput, RecordOutcomeResult
from selfheal.healings.start import start_healing
from selfheal.models.catalog import load_catalog
from selfheal.models.guardrails import Guardrails
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.worker import build_activities, build_worker
from selfheal.workflows.contract import FIND_SOLUTIONS, RECORD_OUTCOME, implemented_by, implements
from tests.integration.demo_stack import (
    INVENTORY,
    TARGET,
    DemoStack,
    demo_stack,
    demo_stack_with_evidence,
    free_port,
    wait_until,
)
from tests.integration.standins import Scenario
from tests.support import runbooks_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def fault_for(stack: DemoStack) -> Fault:
    """A fault as the dev watcher reports it for the demo target."""
    return Fault(
        fingerprint=f"e2e-{uuid.uuid4().hex[:12]}",
        service="checkout",
        type="health_check_failed",
        target=TARGET,
        health_url=f"{stack.target_url}/healthz",
        metric=MetricCheck(url=f"{stack.target_url}/metrics", name="demo_error_ratio", max=0.05),
        labels={"base_url": stack.target_url},
        source="test",
    )


@pytest.fixture
def target(
    tmp_path: Path, client: Client, kb_sessions: sessionmaker[Session]
) -> Iterator[DemoStack]:
    """The demo services, their evidence kept where the worker's providers read it."""
    with demo_stack_with_evidence(tmp_path, client, kb_sessions) as stack:
        yield stack


@pytest.fixture(scope="module")
def kb_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    KnowledgeBase(factory).import_solutions(
        load_catalog(REPO / "runbooks", registry=default_registry())
    )
    yield factory
    engine.dispose()


@pytest_asyncio.fixture(autouse=True)
async def no_healing_left_behind(
    client: Client, task_queue: str, kb_sessions: sessionmaker[Session]
) -> AsyncIterator[None]:
    """A healing a failed test left running (waiting on a breaker, an approval) holds
    checkout/checkout in the guardrail tables the module shares: every later test's healing
    would wait on target_busy and fail too. It is ended here and its hold freed, so that one
    failure stays one."""
    yield
    query = f"TaskQueue='{task_queue}' AND ExecutionStatus='Running'"
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        await handle.terminate(reason="left running by a test")
    Guardrails(kb_sessions).unlock(f"checkout/{TARGET}")


def settings_for(target: DemoStack, runbooks: Path) -> Settings:
    return Settings(
        runbooks_dir=runbooks,
        supervisor=SupervisorSettings(url=target.supervisor_url),
        healing=HealingSettings(stabilization_window_s=1.5, probe_interval_s=0.5, suppression_s=0),
        evidence=EvidenceSettings(metrics_lead_s=2.0),  # the fault is reported seconds after
    )


@pytest_asyncio.fixture
async def healing_worker(
    client: Client,
    task_queue: str,
    target: DemoStack,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> AsyncIterator[None]:
    settings = settings_for(
        target,
        runbooks_for(tmp_path / "runbooks", target.target_url, inventory_url=target.inventory_url),
    )
    async with httpx.AsyncClient() as http:
        activities = build_activities(settings, session_factory=kb_sessions, http=http)
        async with build_worker(client, settings, activities=activities, task_queue=task_queue):
            yield


def solution_counts(factory: sessionmaker[Session]) -> dict[str, tuple[int, int]]:
    return {s.name: (s.attempts, s.successes) for s in KnowledgeBase(factory).list_solutions()}


async def run_healing(client: Client, task_queue: str, fault: Fault) -> HealingStatus:
    started = await start_healing(client, fault, task_queue=task_queue)
    handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
    return await asyncio.wait_for(handle.result(), timeout=120)


@pytest.mark.usefixtures("healing_worker")
async def test_crashed_process_is_restarted_validated_and_learned(
    client: Client, task_queue: str, target: DemoStack, kb_sessions: sessionmaker[Session]
) -> None:
    before = solution_counts(kb_sessions)
    target.inject("crash")
    wait_until(lambda: target.health() is None, what="the target to crash")

    result = await run_healing(client, task_queue, fault_for(target))

    assert result.diagnosis is not None and result.diagnosis.root_cause == "process_crashed"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert target.health() == 200
    assert target.restarts() == 1
    ran = [s for s in result.steps if not s.compensation]
    assert [s.action for s in ran] == ["process.restart"]
    assert result.validations and result.validations[-1].healthy

    after = solution_counts(kb_sessions)
    name = result.solution_name
    assert name is not None
    assert after[name] == (before[name][0] + 1, before[name][1] + 1)
    record = KnowledgeBase(kb_sessions).get_healing(result.workflow_id)
    assert record is not None and record.outcome == "healed"
    assert len(record.steps) == len(result.steps)


@pytest.mark.usefixtures("healing_worker")
async def test_same_fault_healed_again_later_acts_again(
    client: Client, task_queue: str, target: DemoStack
) -> None:
    """A second healing of the same fault (same workflow id, new run) must not be mistaken for
    a retry of the first one's steps."""
    fault = fault_for(target)
    for expected_restarts in (1, 2):
        target.inject("crash")
        wait_until(lambda: target.health() is None, what="the target to crash")
        result = await run_healing(client, task_queue, fault)
        assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
        assert target.restarts() == expected_restarts


@pytest.mark.usefixtures("healing_worker")
async def test_poisoned_cache_falls_through_to_the_next_candidate(
    client: Client, task_queue: str, target: DemoStack, kb_sessions: sessionmaker[Session]
) -> None:
    before = solution_counts(kb_sessions)
    target.inject("poisoned_cache")

    result = await run_healing(client, task_queue, fault_for(target))

    assert result.diagnosis is not None and result.diagnosis.root_cause == "cache_poisoned"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    names = [c.solution_name for c in result.candidates]
    assert len(names) >= 2 and "flush-poisoned-cache" in names
    # Candidates are ranked by Thompson sampling: the restart (higher prior) usually comes
    # first and does not heal; the healing falls through to the flush, which does.
    assert result.solution_name == "flush-poisoned-cache"
    tried = names[: names.index("flush-poisoned-cache") + 1]
    assert len(result.validations) == len(tried)
    assert [v.healthy for v in result.validations] == [False] * (len(tried) - 1) + [True]
    assert target.health() == 200
    after = solution_counts(kb_sessions)
    for failed in tried[:-1]:
        assert after[failed] == (before[failed][0] + 1, before[failed][1])
    healed = tried[-1]
    assert after[healed] == (before[healed][0] + 1, before[healed][1] + 1)


@pytest.mark.usefixtures("healing_worker")
async def test_bad_flag_switched_off(client: Client, task_queue: str, target: DemoStack) -> None:
    target.inject("error_burst")

    result = await run_healing(client, task_queue, fault_for(target))

    assert result.diagnosis is not None and result.diagnosis.root_cause == "bad_feature_flag"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert target.restarts() == 0
    async with httpx.AsyncClient() as http:
        flag = (await http.get(f"{target.target_url}/flags/new_checkout")).json()
    assert flag["enabled"] is False


@pytest.mark.usefixtures("healing_worker")
async def test_errors_that_start_in_the_dependency_heal_the_dependency(
    client: Client, task_queue: str, target: DemoStack
) -> None:
    """checkout fails, but its error traces start in inventory: inventory is restarted, and
    checkout (the alert's service) is left alone; validation looks at checkout."""
    target.inject("inventory_errors")
    wait_until(lambda: target.health() == 503, what="checkout to fail its health check")

    result = await run_healing(client, task_queue, fault_for(target))

    diagnosis = result.diagnosis
    assert diagnosis is not None
    assert (diagnosis.root_cause, diagnosis.component) == ("dependency_failing", "inventory")
    top = diagnosis.hypotheses[0]
    assert top.component == "inventory" and top.confidence >= 0.7
    assert any("traces.origin.service=inventory" in line for line in top.evidence)
    assert diagnosis.acting_on is not None and diagnosis.acting_on.target == INVENTORY
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert [(s.action, s.params["process"]) for s in result.steps] == [
        ("process.restart", INVENTORY)
    ]
    assert (target.restarts(INVENTORY), target.restarts()) == (1, 0)
    assert target.health() == 200


async def test_record_retried_after_commit_counts_once(
    client: Client, task_queue: str, kb_sessions: sessionmaker[Session]
) -> None:
    """The record activity commits, then its completion is lost: Temporal retries it, and the
    retry must not count the attempt twice."""
    real = KnowledgeBaseActivities(kb_sessions, default_registry())
    calls: list[int] = []

    @implements(RECORD_OUTCOME)
    async def record_then_lose_completion(input: RecordOutcomeInput) -> RecordOutcomeResult:
        result = await real.record_outcome(input)
        calls.append(activity.info().attempt)
        if activity.info().attempt == 1:
            raise ApplicationError("connection dropped after commit")
        return result

    scenario = Scenario()
    activities = [
        a
        for a in scenario.activities()
        if implemented_by(a) not in (FIND_SOLUTIONS, RECORD_OUTCOME)
    ]
    activities += [real.find_solutions, record_then_lose_completion]
    before = solution_counts(kb_sessions)
    fault = Fault(service="demo", type="health_check_failed", target=f"r-{uuid.uuid4().hex}")
    async with build_worker(client, Settings(), activities=activities, task_queue=task_queue):
        result = await run_healing(client, task_queue, fault)

    assert result.outcome == HealingOutcome.HEALED
    assert calls == [1, 2]
    after = solution_counts(kb_sessions)
    changed = {name for name in after if after[name] != before.get(name)}
    assert result.solution_name is not None and changed == {result.solution_name}
    attempts, successes = before[result.solution_name]
    assert after[result.solution_name] == (attempts + 1, successes + 1)
    record = KnowledgeBase(kb_sessions).get_healing(result.workflow_id)
    assert record is not None and record.run_id == result.run_id


def worker_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli.main", "worker"],
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_worker_killed_mid_step_then_another_finishes_without_reapplying(
    client: Client,
    task_queue: str,
    tmp_path: Path,
    database_url: str,
    kb_sessions: sessionmaker[Session],
) -> None:
    with demo_stack(tmp_path, startup_delay_s=4) as target:
        env = {
            "SELFHEAL_TEMPORAL__ADDRESS": client.service_client.config.target_host,
            "SELFHEAL_TEMPORAL__TASK_QUEUE": task_queue,
            "SELFHEAL_DATABASE__URL": database_url,
            "SELFHEAL_SUPERVISOR__URL": target.supervisor_url,
            "SELFHEAL_RUNBOOKS_DIR": str(runbooks_for(tmp_path / "runbooks", target.target_url)),
            "SELFHEAL_WORKER__METRICS_PORT": "0",
            "SELFHEAL_WORKER__KB_METRICS_PORT": "0",
            "SELFHEAL_HEALING__STABILIZATION_WINDOW_S": "1",
            "SELFHEAL_HEALING__PROBE_INTERVAL_S": "0.5",
            "SELFHEAL_HEALING__STEP_HEARTBEAT_TIMEOUT_S": "2",
            "SELFHEAL_HEALING__SUPPRESSION_S": "0",
        }
        target.inject("crash")
        wait_until(lambda: target.health() is None, what="the target to crash")
        first = worker_process(env)
        try:
            started = await start_healing(client, fault_for(target), task_queue=task_queue)
            handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)

            for _ in range(600):  # the restart has been applied: the step is now in flight
                if target.restarts() == 1:
                    break
                await asyncio.sleep(0.05)
            assert target.restarts() == 1
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)

        metrics_port = free_port()
        second = worker_process({**env, "SELFHEAL_WORKER__METRICS_PORT": str(metrics_port)})
        try:
            result = await asyncio.wait_for(handle.result(), timeout=90)
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            assert "temporal_activity_execution_latency" in metrics  # the SDK's own metrics
        finally:
            second.terminate()  # SIGTERM: graceful shutdown
            exit_code = second.wait(30)
        assert exit_code == 0

        assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
        assert target.restarts() == 1  # the retried step replayed its key: one restart in all
        restarts = [s for s in result.steps if s.action == "process.restart"]
        assert [s.status for s in restarts] == [StepStatus.SUCCEEDED]
        assert target.health() == 200
