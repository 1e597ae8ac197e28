"""``ForecastWorkflow``: one forecast of one rule, started by the rule's Temporal Schedule
(``forecast-<rule>``, every ``rule.every``; ``healings/schedules.py`` keeps the Schedules in step
with ``runbooks/forecasts.yaml``).

It forecasts the rule's series (``run_forecast``: the metrics provider's points, the trend and
seasonality model of ``detection/forecast.py``) and, when a crossing is at least
``min_probability`` likely within the horizon, reports the predicted fault through the door
(``report_prediction``): a healing of type ``predicted_<kind>``, whose fingerprint is the same at
every run, so that the same prediction made every hour joins the healing already waiting for
its window instead of starting another. Deterministic: it only calls activities.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from selfheal.domain.forecast import ForecastRun, ReportPredictionInput, RunForecastInput
    from selfheal.workflows.contract import FORECAST_WORKFLOW, REPORT_PREDICTION, RUN_FORECAST

FORECAST_TIMEOUT = timedelta(seconds=60)
REPORT_TIMEOUT = timedelta(seconds=30)
# A forecast that cannot read its series now is made again at the next run of the Schedule:
# a few attempts, not an outage's worth.
FORECAST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=4,
)


@workflow.defn(name=FORECAST_WORKFLOW)
class ForecastWorkflow:
    @workflow.run
    async def run(self, input: RunForecastInput) -> ForecastRun:
        prediction = await RUN_FORECAST.execute(
            input, start_to_close_timeout=FORECAST_TIMEOUT, retry_policy=FORECAST_RETRY
        )
        if not prediction.predicted:
            return ForecastRun(prediction=prediction, detail="no fault predicted")
        reported = await REPORT_PREDICTION.execute(
            ReportPredictionInput(prediction=prediction),
            start_to_close_timeout=REPORT_TIMEOUT,
            retry_policy=FORECAST_RETRY,
        )
        return ForecastRun(
            prediction=prediction, workflow_id=reported.workflow_id, detail=reported.detail
        )
