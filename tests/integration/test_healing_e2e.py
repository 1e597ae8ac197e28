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
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.actions import default_registry
from activities.knowledge import KnowledgeBaseActivities
from core.database import make_engine, make_session_factory
from core.settings import HealingSettings, Settings, SupervisorSettings
from demo.scenarios import get_scenario
from demo.target import target_command
from detection.intake import start_healing
from domain import Fault, HealingOutcome, HealingStatus, MetricCheck, StepStatus
from domain.payloads import ActivityName, RecordOutcomeInput, RecordOutcomeResult
from models.catalog import load_catalog
from models.knowledge_base import KnowledgeBase
from supervisor.api import create_app
from supervisor.core import Supervisor
from supervisor.serving import ServerHandle, serve_in_thread
from tests.integration.standins import Scenario
from worker import build_activities, build_worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROCESS = "demo-target"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DemoTarget:
    url: str
    supervisor: Supervisor
    control: ServerHandle

    def fault(self) -> Fault:
        return Fault(
            fingerprint=f"e2e-{uuid.uuid4().hex[:12]}",
            service="demo",
            type="health_check_failed",
            target=PROCESS,
            health_url=f"{self.url}/healthz",
            metric=MetricCheck(url=f"{self.url}/metrics", name="demo_error_ratio", max=0.05),
            labels={"base_url": self.url},
            source="test",
        )

    def restarts(self) -> int:
        return self.supervisor.status(PROCESS).restarts

    async def healthy(self) -> bool:
        async with httpx.AsyncClient() as http:
            try:
                return (await http.get(f"{self.url}/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False


def start_target(tmp_path: Path, *, startup_delay_s: float = 0) -> Iterator[DemoTarget]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(tmp_path / "supervisor")
    command = target_command(port, tmp_path / "target")
    if startup_delay_s:
        # A slow-starting target keeps process.restart busy long enough to kill its worker.
        command = ["sh", "-c", f'sleep {startup_delay_s}; exec "$@"', "sh", *command]
    supervisor.add(PROCESS, command, health_url=f"{url}/healthz")
    supervisor.start_all()
    control = serve_in_thread(create_app(supervisor))
    try:
        for _ in range(200):
            if supervisor.status(PROCESS).healthy:
                break
            import time

            time.sleep(0.05)
        yield DemoTarget(url=url, supervisor=supervisor, control=control)
    finally:
        control.stop()
        supervisor.stop_all()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoTarget]:
    yield from start_target(tmp_path)


@pytest.fixture(scope="module")
def kb_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    KnowledgeBase(factory).import_solutions(
        load_catalog(REPO / "runbooks", registry=default_registry())
    )
    yield factory
    engine.dispose()


def settings_for(target: DemoTarget) -> Settings:
    return Settings(
        runbooks_dir=REPO / "runbooks",
        supervisor=SupervisorSettings(url=target.control.url),
        healing=HealingSettings(stabilization_window_s=1.5, probe_interval_s=0.5),
    )


@pytest_asyncio.fixture
async def healing_worker(
    client: Client, task_queue: str, target: DemoTarget, kb_sessions: sessionmaker[Session]
) -> AsyncIterator[None]:
    settings = settings_for(target)
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
    client: Client, task_queue: str, target: DemoTarget, kb_sessions: sessionmaker[Session]
) -> None:
    before = solution_counts(kb_sessions)
    get_scenario("crash").inject(target.url)
    await asyncio.sleep(0.5)
    assert not await target.healthy()

    result = await run_healing(client, task_queue, target.fault())

    assert result.diagnosis is not None and result.diagnosis.root_cause == "process_crashed"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert await target.healthy()
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
async def test_poisoned_cache_falls_through_to_the_next_candidate(
    client: Client, task_queue: str, target: DemoTarget, kb_sessions: sessionmaker[Session]
) -> None:
    before = solution_counts(kb_sessions)
    get_scenario("poisoned_cache").inject(target.url)

    result = await run_healing(client, task_queue, target.fault())

    assert result.diagnosis is not None and result.diagnosis.root_cause == "cache_poisoned"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    names = [c.solution_name for c in result.candidates]
    assert len(names) >= 2
    assert result.solution_name == names[1]  # the first candidate did not heal it
    assert not result.validations[0].healthy and result.validations[-1].healthy
    assert await target.healthy()
    after = solution_counts(kb_sessions)
    assert after[names[0]] == (before[names[0]][0] + 1, before[names[0]][1])
    assert after[names[1]] == (before[names[1]][0] + 1, before[names[1]][1] + 1)


@pytest.mark.usefixtures("healing_worker")
async def test_bad_flag_switched_off(client: Client, task_queue: str, target: DemoTarget) -> None:
    get_scenario("error_burst").inject(target.url)

    result = await run_healing(client, task_queue, target.fault())

    assert result.diagnosis is not None and result.diagnosis.root_cause == "bad_feature_flag"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert target.restarts() == 0
    async with httpx.AsyncClient() as http:
        flag = (await http.get(f"{target.url}/flags/new_checkout")).json()
    assert flag["enabled"] is False


async def test_record_retried_after_commit_counts_once(
    client: Client, task_queue: str, kb_sessions: sessionmaker[Session]
) -> None:
    """The record activity commits, then its completion is lost: Temporal retries it, and the
    retry must not count the attempt twice."""
    real = KnowledgeBaseActivities(kb_sessions, default_registry())
    calls: list[int] = []

    @activity.defn(name=ActivityName.RECORD_OUTCOME)
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
        if a.__temporal_activity_definition.name  # type: ignore[attr-defined]
        not in (ActivityName.FIND_SOLUTIONS, ActivityName.RECORD_OUTCOME)
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
        [sys.executable, "-m", "cli.main", "worker"],
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
    targets = start_target(tmp_path, startup_delay_s=4)
    target = next(targets)
    try:
        env = {
            "SELFHEAL_TEMPORAL__ADDRESS": client.service_client.config.target_host,
            "SELFHEAL_TEMPORAL__TASK_QUEUE": task_queue,
            "SELFHEAL_DATABASE__URL": database_url,
            "SELFHEAL_SUPERVISOR__URL": target.control.url,
            "SELFHEAL_RUNBOOKS_DIR": str(REPO / "runbooks"),
            "SELFHEAL_WORKER__METRICS_PORT": "0",
            "SELFHEAL_HEALING__STABILIZATION_WINDOW_S": "1",
            "SELFHEAL_HEALING__PROBE_INTERVAL_S": "0.5",
            "SELFHEAL_HEALING__STEP_HEARTBEAT_TIMEOUT_S": "2",
        }
        get_scenario("crash").inject(target.url)
        first = worker_process(env)
        started = await start_healing(client, target.fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)

        for _ in range(600):  # the restart has been applied: the step is now in flight
            if target.restarts() == 1:
                break
            await asyncio.sleep(0.05)
        assert target.restarts() == 1
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
        assert await target.healthy()
    finally:
        next(targets, None)
