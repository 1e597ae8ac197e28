"""Predicted faults (issue 12 §2) through the real HealingWorkflow and ForecastWorkflow on the
Temporal dev server, with stand-in activities (tests/integration/standins.py): the forecast's
probabilities and the window chosen are the scenario's.

With the time-skipping client (``temporal_env.client``) a window six hours away passes at once:
the healing waits on a durable timer, forecasts again, and acts only if the crossing is still
likely; a prediction that faded ends ``resolved_before_action`` with nothing run. A predicted
fault asks for approval by default, before the window."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from selfheal.domain import Fault, HealingOutcome, HealingPhase, HealingPolicy, HealingStatus
from selfheal.domain.forecast import RULE_LABEL, ForecastRun, RunForecastInput
from selfheal.healings.start import start_healing
from selfheal.worker import workflow_runner
from selfheal.workflows.contract import FORECAST_WORKFLOW, forecast_schedule_id
from selfheal.workflows.forecast import ForecastWorkflow
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when

WINDOW_IN_S = 6 * 3600.0
NO_APPROVAL = HealingPolicy(stabilization_window_s=0, probe_interval_s=1, predicted_approval=False)


def predicted(rule: str = "checkout-memory") -> Fault:
    crossing = datetime.now(UTC) + timedelta(hours=20)
    return Fault(
        service="demo",
        type="predicted_memory_leak",
        target=f"t-{uuid.uuid4().hex[:8]}",
        labels={RULE_LABEL: rule, "source": "forecast"},
        values={"probability": 0.9, "crossing_at": crossing.timestamp(), "threshold": 90.0},
    )


async def timers(client: Client, workflow_id: str) -> list[float]:
    """The durable timers the healing started, in seconds."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def test_a_prediction_waits_for_its_window_then_forecasts_again_and_acts(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client  # skips time while the workflow only waits
    scenario = Scenario(policy=NO_APPROVAL, window_in_s=WINDOW_IN_S, forecasts=[0.9])
    fault = predicted()
    started = time.monotonic()
    async with running(client, task_queue, scenario):
        handle = await start_healing(client, fault, task_queue=task_queue)
        result = await asyncio.wait_for(
            client.get_workflow_handle(handle.workflow_id, result_type=HealingStatus).result(),
            timeout=60,
        )

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    # the window first, then the forecast again, then the plan
    assert scenario.journal == ["window", "forecast:0.9", "run:restart", "validate:ok"]
    [asked] = scenario.windows_asked
    assert asked.service == "demo" and asked.workflow_id == handle.workflow_id
    assert asked.crossing_at is not None
    assert abs(asked.crossing_at.timestamp() - fault.values["crossing_at"]) < 1
    assert result.window is not None and not result.window.act_now
    assert result.recheck is not None and result.recheck.probability == 0.9
    # six hours on a durable timer, skipped: the test took seconds
    [waited] = [t for t in await timers(client, handle.workflow_id) if t > 3600]
    assert WINDOW_IN_S - 60 < waited <= WINDOW_IN_S
    assert time.monotonic() - started < WINDOW_IN_S / 60


async def test_a_prediction_that_faded_is_dropped_with_nothing_run(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    scenario = Scenario(policy=NO_APPROVAL, window_in_s=WINDOW_IN_S, forecasts=[0.2])
    async with running(client, task_queue, scenario):
        handle = await start_healing(client, predicted(), task_queue=task_queue)
        result = await asyncio.wait_for(
            client.get_workflow_handle(handle.workflow_id, result_type=HealingStatus).result(),
            timeout=60,
        )

    assert result.outcome == HealingOutcome.RESOLVED_BEFORE_ACTION
    assert "the risk went away" in result.outcome_detail and "20%" in result.outcome_detail
    assert scenario.journal == ["window", "forecast:0.2"]
    assert result.steps == []
    assert len(scenario.recorded) == 1


async def test_a_prediction_asks_for_approval_before_its_window(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(window_in_s=2.0)  # the default policy: predicted faults ask
    async with running(client, task_queue, scenario):
        started = await start_healing(client, predicted(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        gated = await status_when(handle, lambda s: s.awaiting_approval)
        assert any("a predicted fault asks" in r for r in gated.approval_reasons)
        assert scenario.journal == []  # neither the window nor the plan before a human says so
        await handle.execute_update(
            HealingWorkflow.approve, {"by": "oncall", "reason": "tonight is fine"}
        )
        waiting = await status_when(
            handle, lambda s: s.phase == HealingPhase.AWAITING_WINDOW or s.outcome is not None
        )
        assert waiting.phase == HealingPhase.AWAITING_WINDOW, waiting.outcome_detail
        assert waiting.window is not None
        result = await asyncio.wait_for(handle.result(), timeout=60)

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert scenario.journal == ["window", "forecast:0.9", "run:restart", "validate:ok"]
    assert result.approval is not None and result.approval.by == "oncall"


async def test_the_forecast_workflow_reports_only_a_likely_crossing(
    client: Client, task_queue: str
) -> None:
    for probability, reported in ((0.85, True), (0.4, False)):
        scenario = Scenario(forecasts=[probability])
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[ForecastWorkflow, HealingWorkflow],
            activities=scenario.activities(),
            workflow_runner=workflow_runner(),
        ):
            run: ForecastRun = await client.execute_workflow(
                FORECAST_WORKFLOW,
                RunForecastInput(rule="disk-var"),
                id=f"{forecast_schedule_id('disk-var')}-{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
                result_type=ForecastRun,
            )
        assert run.prediction.probability == probability
        assert ("report:disk-var" in scenario.journal) is reported, scenario.journal
        assert (run.detail == "no fault predicted") is not reported


async def test_a_predicted_faults_approval_waits_longer_than_an_alerts(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Asked hours before its window, it waits ``predicted_approval_timeout_s`` (12 h), not
    the 30 minutes an alert's approval waits; then times out having done nothing."""
    client = temporal_env.client
    policy = HealingPolicy(stabilization_window_s=0, probe_interval_s=1, approval_timeout_s=1800)
    scenario = Scenario(policy=policy, window_in_s=WINDOW_IN_S)
    async with running(client, task_queue, scenario):
        handle = await start_healing(client, predicted(), task_queue=task_queue)
        result = await asyncio.wait_for(
            client.get_workflow_handle(handle.workflow_id, result_type=HealingStatus).result(),
            timeout=60,
        )

    assert result.outcome == HealingOutcome.APPROVAL_TIMEOUT
    assert "no decision within 43200s" in result.outcome_detail
    assert scenario.journal == []
    assert 43_200 in [round(t) for t in await timers(client, handle.workflow_id)]
