"""Predicted faults (issue 12 §2): the forecast rules of ``runbooks/forecasts.yaml``, what a
forecast of one rule concluded, and the payloads of the activities that forecast, choose a
maintenance window and report a prediction.

A rule names a service's series (a metric of the service's evidence queries, or PromQL, read
through the metrics provider as validation criteria are), the threshold it must not cross and
how far ahead to look. A Temporal Schedule per rule (``forecast-<rule>``) runs the
``ForecastWorkflow`` every ``every``; a prediction (probability at least ``min_probability``)
becomes a Fault of type ``predicted_<kind>`` reported through the door, whose healing waits for
the service's next maintenance window, asks for approval by default and re-checks the forecast
before acting.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selfheal.domain.fault import SUMMARY_MAX, Fault, clip
from selfheal.domain.maintenance import parse_duration

ForecastKind = Literal[
    "disk_fill", "memory_leak", "pool_saturation", "queue_saturation", "cert_expiry"
]
PREDICTED_PREFIX = "predicted_"
RULE_LABEL = "forecast_rule"
"""the label of a predicted fault naming its rule (the healing re-checks through it)"""
DEFAULT_MIN_PROBABILITY = 0.7
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


LARGEST_VALUE = 1e150
"""Values (and thresholds) beyond ± this are refused: a model squares them (1e150 squared is near
float's limit), and no metric is that large; in a series, such a value is a corrupt row."""
MAX_HORIZON_S = 3650 * 86_400.0
"""The longest horizon: 10 years (a certificate's lifetime), far past what any history supports."""


def threshold_problem(value: float) -> str | None:
    """Why ``value`` cannot be a threshold (YAML reads ``.inf`` and ``.nan`` as numbers: no
    series crosses them, nor 1e200), or None."""
    if math.isfinite(value) and abs(value) <= LARGEST_VALUE:
        return None
    return f"expected a finite number within ±{LARGEST_VALUE:g}, got {value}"


def parse_horizon(text: str) -> float:
    """Seconds of a forecast horizon (``24h``, ``7d``); ValueError unless positive and at most
    ``MAX_HORIZON_S``. The rules and ``selfheal forecast --horizon`` both read it so."""
    seconds = parse_duration(text)
    if seconds > MAX_HORIZON_S:
        raise ValueError(f"expected at most {MAX_HORIZON_S / 86_400:g}d, got {text!r}")
    return seconds


def _positive_duration(value: str, *, at_least_s: float = 0.0) -> str:
    seconds = parse_duration(value)
    if seconds < at_least_s:
        raise ValueError(f"expected at least {at_least_s:g}s, got {value!r}")
    return value


class ForecastRule(BaseModel):
    """One series to forecast against a threshold (``runbooks/forecasts.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="lowercase letters, digits and '-' (a Schedule id part)")
    service: str = Field(min_length=1, description="a service of the catalog")
    target: str | None = Field(default=None, description="what a plan acts on (a catalog target)")
    kind: ForecastKind
    metric: str = Field(
        min_length=1,
        description="a query name of the service's evidence, or PromQL (one series)",
    )
    threshold: float
    direction: Literal["up", "down"] = Field(
        default="up", description="up: the series must stay below; down: above"
    )
    horizon: str = Field(default="24h", description="how far ahead (900, 15m, 24h, 7d)")
    every: str = Field(default="1h", description="how often the Schedule forecasts")
    lookback: str = Field(default="7d", description="the history the forecast reads")
    min_probability: float = Field(
        default=DEFAULT_MIN_PROBABILITY,
        gt=0.0,
        le=1.0,
        description="a crossing at least this likely within the horizon is a predicted fault",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"expected lowercase letters, digits and '-' (at most 63), got {value!r}"
            )
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        problem = threshold_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("horizon", "every", "lookback", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # a bare number in YAML (every: 900) is seconds, as on the command line
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:g}"
        return value

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, value: str) -> str:
        parse_horizon(value)
        return value

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        return _positive_duration(value)

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        return _positive_duration(value, at_least_s=60.0)

    @property
    def horizon_s(self) -> float:
        return parse_horizon(self.horizon)

    @property
    def every_s(self) -> float:
        return parse_duration(self.every)

    @property
    def lookback_s(self) -> float:
        return parse_duration(self.lookback)

    @property
    def fault_type(self) -> str:
        return PREDICTED_PREFIX + self.kind


class ForecastRules(BaseModel):
    """``runbooks/forecasts.yaml``."""

    model_config = ConfigDict(extra="forbid")

    forecasts: list[ForecastRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ForecastRules:
        seen: set[str] = set()
        for rule in self.forecasts:
            if rule.name in seen:
                raise ValueError(f"forecast rule {rule.name!r} is defined twice")
            seen.add(rule.name)
        return self

    def get(self, name: str) -> ForecastRule | None:
        return next((rule for rule in self.forecasts if rule.name == name), None)


class Prediction(BaseModel):
    """What one forecast of a rule concluded (the ``run_forecast`` activity's result)."""

    rule: str
    at: datetime = Field(description="when the forecast was made")
    probability: float = Field(ge=0.0, le=1.0)
    min_probability: float
    crossing_at: datetime | None = Field(description="the expected crossing, within the horizon")
    already_crossed: bool = False
    level: float | None = Field(default=None, description="the series' expected value now")
    threshold: float
    trend_per_hour: float | None = None
    points_used: int = 0
    points_skipped: int = 0
    detail: str = Field(default="", description="one line for people")

    @property
    def predicted(self) -> bool:
        return self.probability >= self.min_probability


class RunForecastInput(BaseModel):
    rule: str = Field(description="the rule's name; the activity reads its current definition")


class ChooseWindowInput(BaseModel):
    service: str
    crossing_at: datetime | None
    workflow_id: str = Field(description="the healing choosing: not a conflict with itself")


class ChosenWindow(BaseModel):
    """Where a predicted fault's plan runs: a maintenance window, or now."""

    start: datetime
    end: datetime | None = None
    act_now: bool = False
    score: float = 0.0
    reasons: list[str] = Field(default_factory=list)


class ReportPredictionInput(BaseModel):
    prediction: Prediction


class ReportPredictionResult(BaseModel):
    workflow_id: str | None = Field(description="the healing started or joined; None: refused")
    detail: str = ""


class ForecastRun(BaseModel):
    """What one scheduled forecast of a rule did (the ``ForecastWorkflow``'s result)."""

    prediction: Prediction
    workflow_id: str | None = Field(
        default=None, description="the healing the prediction started or joined"
    )
    detail: str = ""


def is_predicted(fault_type: str, labels: dict[str, str]) -> bool:
    """A fault a forecast predicted (type ``predicted_<kind>`` with its rule's label)."""
    return fault_type.startswith(PREDICTED_PREFIX) and bool(labels.get(RULE_LABEL))


def predicted_fault(rule: ForecastRule, prediction: Prediction) -> Fault:
    """The Fault a prediction reports: type ``predicted_<kind>`` on the rule's service and
    target, labelled with the rule (the healing re-checks through it), its numbers as values.
    Its fingerprint (service, type, target) is the same at every forecast of the rule."""
    values = {
        "probability": prediction.probability,
        "threshold": prediction.threshold,
    }
    if prediction.crossing_at is not None:
        values["crossing_at"] = prediction.crossing_at.timestamp()
    if prediction.level is not None:
        values["level"] = prediction.level
    if prediction.trend_per_hour is not None:
        values["trend_per_hour"] = prediction.trend_per_hour
    summary = f"predicted {rule.kind.replace('_', ' ')}: {prediction.detail}"
    return Fault(
        service=rule.service,
        type=rule.fault_type,
        target=rule.target,
        severity="warning",
        summary=clip(summary, SUMMARY_MAX),
        labels={RULE_LABEL: rule.name, "source": "forecast"},
        values=values,
    )
