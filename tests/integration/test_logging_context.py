"""On a real worker, every line logged about a healing names it: an activity's structlog, stdlib
and ``activity.logger`` lines through ``HealingLogInterceptor``, the workflow's ``workflow.logger``
lines (from inside the sandbox) through the extras temporalio attaches."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

# The sandbox re-imports this module for the workflow: what it needs not, it takes as it is.
with workflow.unsafe.imports_passed_through():
    import structlog

    from selfheal.core.log_context import HealingLogInterceptor
    from selfheal.core.logging import configure_logging
    from selfheal.core.settings import Settings
    from selfheal.worker import build_worker
    from selfheal.worker.build import workflow_runner
    from tests.integration.standins import Scenario
    from tests.unit.test_logging import logging_state_restored

pytestmark = pytest.mark.integration


@activity.defn
async def log_probe(note: str) -> str:
    structlog.get_logger("selfheal.test.probe").info("probe from structlog", note=note)
    logging.getLogger("selfheal.test.library").info("probe from a library")
    activity.logger.info("probe from activity.logger")
    return note


@workflow.defn
class LogProbeWorkflow:
    @workflow.run
    async def run(self, note: str) -> str:
        workflow.logger.info("probe from the workflow")
        return await workflow.execute_activity(
            log_probe, note, start_to_close_timeout=timedelta(seconds=30)
        )


@pytest.fixture(autouse=True)
def json_logging() -> Iterator[None]:
    with logging_state_restored():
        configure_logging("INFO", fmt="json")
        yield


async def test_every_line_of_a_healing_names_it(
    client: Client, task_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = uuid.uuid4().hex[:16]
    workflow_id = f"heal-{fingerprint}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[LogProbeWorkflow],
        activities=[log_probe],
        workflow_runner=workflow_runner(),
        interceptors=[HealingLogInterceptor()],
    ):
        handle = await client.start_workflow(
            LogProbeWorkflow.run, "hello", id=workflow_id, task_queue=task_queue
        )
        assert await asyncio.wait_for(handle.result(), timeout=60) == "hello"

    lines: dict[str, dict[str, Any]] = {}
    for raw in capsys.readouterr().err.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            lines.setdefault(line["event"], line)
    from_activity = [
        "probe from structlog",
        "probe from a library",
        "probe from activity.logger",
    ]
    for event in [*from_activity, "probe from the workflow"]:
        assert event in lines, sorted(lines)
        assert lines[event]["workflow_id"] == workflow_id
        assert lines[event]["fingerprint"] == fingerprint
        assert lines[event]["run_id"] == handle.result_run_id
    for event in from_activity:
        assert lines[event]["activity"] == "log_probe"
        assert lines[event]["attempt"] == 1
    assert lines["probe from structlog"]["note"] == "hello"


async def test_the_selfheal_worker_carries_the_interceptor(client: Client, task_queue: str) -> None:
    worker = build_worker(
        client, Settings(), activities=Scenario().activities(), task_queue=task_queue
    )
    interceptors = worker.config().get("interceptors") or []
    assert any(isinstance(i, HealingLogInterceptor) for i in interceptors)


ENDED: list[str] = []


@activity.defn
async def outlive_workflow(note: str) -> str:
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.1)
    finally:
        details = activity.cancellation_details()
        ENDED.append(f"not_found={details.not_found}" if details else "no details")


@workflow.defn
class EndsBeforeItsActivityWorkflow:
    @workflow.run
    async def run(self, note: str) -> str:
        workflow.start_activity(
            outlive_workflow,
            note,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=5),
            cancellation_type=workflow.ActivityCancellationType.ABANDON,
        )
        await workflow.sleep(0.5)
        return note


async def test_an_activity_outliving_its_workflow_ends_without_a_warning(
    client: Client, task_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The side-effect watch a healing cancels just before it completes learns of it once the
    workflow is gone: that is no failure, and no warning with a traceback per healing."""
    ENDED.clear()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[EndsBeforeItsActivityWorkflow],
        activities=[outlive_workflow],
        workflow_runner=workflow_runner(),
        interceptors=[HealingLogInterceptor()],
        max_heartbeat_throttle_interval=timedelta(seconds=0.2),
        default_heartbeat_throttle_interval=timedelta(seconds=0.2),
    ):
        handle = await client.start_workflow(
            EndsBeforeItsActivityWorkflow.run,
            "bye",
            id=f"heal-{uuid.uuid4().hex[:16]}",
            task_queue=task_queue,
        )
        assert await asyncio.wait_for(handle.result(), timeout=60) == "bye"
        for _ in range(100):
            if ENDED:
                break
            await asyncio.sleep(0.1)
    assert ENDED == ["not_found=True"]
    err = capsys.readouterr().err
    assert "Completing activity as failed" not in err
    assert "Traceback" not in err
