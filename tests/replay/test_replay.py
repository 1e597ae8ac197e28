"""Replays saved HealingWorkflow histories against the current code: a change that would break
running healings (non-determinism) fails here before it reaches production."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from selfheal.worker import workflow_runner
from selfheal.workflows.forecast import ForecastWorkflow
from selfheal.workflows.healing import HealingWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 72  # eight generations; the third adds guardrail paths, the fourth
    # was recorded through the Temporal contract, the fifth adds the suppression window, the
    # seventh the after-acting paths (guards, breaker, disputed resolution, approvers, escalation
    # on an unexpected error, the PagerDuty resolve)
    stems = {p.stem for p in HISTORIES}
    assert {"breaker_closed.v7", "breaker_left_open.v7", "guard_breach_next_candidate.v7"} <= stems
    # the eighth: predicted faults (a window, the forecast again, acting or not) and the
    # scheduled ForecastWorkflow
    assert {"predicted_window_acted.v8", "predicted_faded.v8", "forecast_reported.v8"} <= stems


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[HealingWorkflow, ForecastWorkflow],
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
