"""The ``report_prediction`` activity: a scheduled forecast's prediction reported through the
door (``healings/``), the one place that starts healings, as any other fault is.

It lives with the worker, not in ``activities/``: it is the one activity that is a client of the
door (a Temporal client of its own, connected on first use), and ``activities/`` may not import
``healings/``.
"""

from __future__ import annotations

import asyncio

import structlog

from selfheal.activities.errors import as_application_error
from selfheal.core.forecasts import ForecastRulesSource
from selfheal.core.settings import Settings
from selfheal.domain import ConfigError, IntakeError
from selfheal.domain.forecast import (
    ReportPredictionInput,
    ReportPredictionResult,
    predicted_fault,
)
from selfheal.healings import Healings
from selfheal.workflows.contract import REPORT_PREDICTION, implements

log = structlog.get_logger(__name__)


class PredictionActivities:
    def __init__(
        self, settings: Settings, rules: ForecastRulesSource, *, door: Healings | None = None
    ) -> None:
        self._settings = settings
        self._rules = rules  # the one run_forecast reads: re-read only when the file changes
        self._door = door
        self._connecting = asyncio.Lock()

    async def door(self) -> Healings:
        async with self._connecting:
            if self._door is None:
                self._door = await Healings.connect(self._settings)
            return self._door

    @implements(REPORT_PREDICTION)
    async def report_prediction(self, input: ReportPredictionInput) -> ReportPredictionResult:
        prediction = input.prediction
        rule = self._rules.get(prediction.rule)
        if rule is None:
            error = ConfigError(
                f"forecast rule {prediction.rule!r} is not in {self._rules.path} any more"
            )
            raise as_application_error(error) from None
        fault = predicted_fault(rule, prediction)
        door = await self.door()
        try:
            report = await door.report(fault)
        except IntakeError as exc:
            # the catalog refuses the fault (its service or target is gone): nothing to retry
            log.warning("prediction refused", rule=rule.name, reason=str(exc))
            return ReportPredictionResult(workflow_id=None, detail=f"refused: {exc}")
        log.info(
            "prediction reported",
            rule=rule.name,
            workflow_id=report.workflow_id,
            kind=report.kind,
            probability=prediction.probability,
        )
        return ReportPredictionResult(
            workflow_id=report.workflow_id, detail=f"{report.kind} {report.workflow_id}"
        )
