"""``run_forecast`` and ``choose_window`` against real sources: series written into the intake's
OTLP store in Postgres and read back through the metrics door, healings holding targets in the
guardrail tables."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.forecast import ForecastActivities
from selfheal.core.catalog import (
    EvidenceSpec,
    MetricsEvidence,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
)
from selfheal.core.settings import EvidenceSettings
from selfheal.detection.parsers import MetricPoint
from selfheal.domain.forecast import (
    ChooseWindowInput,
    ChosenWindow,
    ForecastRule,
    ForecastRules,
    Prediction,
    RunForecastInput,
)
from selfheal.domain.maintenance import MaintenanceWindow
from selfheal.models.guardrails import Guardrails, Run, target_key
from selfheal.models.metric_store import MetricStore
from tests.support import sessions

pytestmark = pytest.mark.integration

HOUR = 3600.0
STEP = 300.0
EVIDENCE = EvidenceSettings(series_max_points=2000, series_max_age_s=3 * 86400, max_points=2000)
MEMORY = "app_memory_bytes"
MB = 1e6


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(database_url) as made:
        yield made


def service_of(name: str, *windows: MaintenanceWindow) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        targets=[TargetSpec(name=f"{name}-1", kind="process")],
        evidence=EvidenceSpec(
            metrics=MetricsEvidence(queries={"memory": f'{MEMORY}{{service="${{service}}"}}'})
        ),
        maintenance_windows=list(windows),
    )


def rule_of(service: str, **fields: object) -> ForecastRule:
    values: dict[str, object] = {
        "name": f"r-{uuid.uuid4().hex[:8]}",
        "service": service,
        "kind": "memory_leak",
        "metric": "memory",
        "threshold": 1000 * MB,
        "horizon": "24h",
        "lookback": "2d",
        **fields,
    }
    return ForecastRule.model_validate(values)


async def write(
    factory: sessionmaker[Session],
    service: str,
    times: np.ndarray,
    values: np.ndarray,
    *,
    name: str = MEMORY,
    pod: str = "a",
) -> None:
    store = MetricStore(factory, max_points_per_series=2000, max_age_s=3 * 86400)
    labels = {"service.name": service, "pod": pod}
    await store.add(
        [MetricPoint(name, labels, float(t), float(v)) for t, v in zip(times, values, strict=True)]
    )


def activities(
    factory: sessionmaker[Session], catalog: ServiceCatalog, *rules: ForecastRule
) -> ForecastActivities:
    return ForecastActivities(
        ForecastRules(forecasts=list(rules)), catalog, EVIDENCE, session_factory=factory
    )


async def forecast(acts: ForecastActivities, rule: ForecastRule) -> Prediction:
    return await ActivityEnvironment().run(acts.run_forecast, RunForecastInput(rule=rule.name))


# --- run_forecast -----------------------------------------------------------------------------


async def test_a_leak_is_predicted_near_its_true_crossing(factory: sessionmaker[Session]) -> None:
    """Memory leaking 20 MB/h through the 2 days read (a leak since a deploy days ago), with
    noise and a few repeated timestamps; a second pod stays flat. The level reaches 1000 MB
    10 h from now."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(7)
    now = time.time()
    times = np.arange(now - 48 * HOUR, now, STEP)
    slope = 20 * MB / HOUR
    level_now = 1000 * MB - 10 * HOUR * slope
    level = level_now - slope * (now - times)
    await write(factory, name, times, level + rng.normal(0, 4 * MB, times.size))
    await write(factory, name, times[-6:], level[-6:] + 2 * MB)  # the same times, again
    await write(factory, name, times, 400 * MB + rng.normal(0, 4 * MB, times.size), pod="b")
    rule = rule_of(name)
    catalog = ServiceCatalog(services=[service_of(name)])
    prediction = await forecast(activities(factory, catalog, rule), rule)

    truth = now + 10 * HOUR
    assert prediction.predicted and prediction.probability >= 0.7, prediction
    assert prediction.crossing_at is not None
    error_h = (prediction.crossing_at.timestamp() - truth) / HOUR
    print(f"leak: p={prediction.probability:.3f}, off by {error_h:+.2f} h; {prediction.detail}")
    assert abs(error_h) <= 1.5  # 15 % of the 10 h lead
    assert prediction.trend_per_hour is not None
    assert prediction.trend_per_hour == pytest.approx(slope * HOUR, rel=0.2)
    assert prediction.level == pytest.approx(level_now, rel=0.02)
    assert not prediction.already_crossed
    assert prediction.detail.startswith(f"memory of {name} (memory) crosses 1e+09 in ~")
    assert 'series {pod="a", service.name=' in prediction.detail
    assert "nearest the threshold of 2" in prediction.detail
    assert "6 repeated timestamps averaged" in prediction.detail


async def test_a_flat_series_predicts_nothing(factory: sessionmaker[Session]) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(11)
    now = time.time()
    times = np.arange(now - 48 * HOUR, now, STEP)
    await write(factory, name, times, 700 * MB + rng.normal(0, 15 * MB, times.size))
    rule = rule_of(name)
    prediction = await forecast(
        activities(factory, ServiceCatalog(services=[service_of(name)]), rule), rule
    )
    print(f"flat: p={prediction.probability:.3f}; {prediction.detail}")
    assert not prediction.predicted and prediction.probability < 0.1
    assert prediction.crossing_at is None
    assert "is not expected to cross 1e+09 within 24.0 h" in prediction.detail


async def test_a_falling_series_read_by_promql_as_written(factory: sessionmaker[Session]) -> None:
    """Free disk falling 1 GB/h: PromQL as written (no query of that name), direction down."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(3)
    now = time.time()
    times = np.arange(now - 24 * HOUR, now, STEP)
    free = 30e9 - 1e9 * (times - times[0]) / HOUR  # about 6 GB now: 2 GB in about 4 h
    await write(factory, name, times, free + rng.normal(0, 0.05e9, times.size), name="disk_free")
    rule = rule_of(
        name,
        kind="disk_fill",
        metric=f'disk_free{{service="{name}"}}',
        threshold=2e9,
        direction="down",
        horizon="12h",
    )
    prediction = await forecast(
        activities(factory, ServiceCatalog(services=[service_of(name)]), rule), rule
    )
    truth = now + (free[-1] - 2e9) / 1e9 * HOUR
    assert prediction.predicted, prediction
    assert prediction.crossing_at is not None
    error_h = (prediction.crossing_at.timestamp() - truth) / HOUR
    print(f"disk: p={prediction.probability:.3f}, crossing off by {error_h:+.2f} h")
    assert abs(error_h) <= 0.5
    assert prediction.trend_per_hour is not None and prediction.trend_per_hour < 0
    assert prediction.detail.startswith(f"disk of {name} (disk_free{{service=")


async def test_no_series_or_too_few_points_predict_nothing(factory: sessionmaker[Session]) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    catalog = ServiceCatalog(services=[service_of(name)])
    rule = rule_of(name)
    acts = activities(factory, catalog, rule)
    nothing = await forecast(acts, rule)
    assert (nothing.probability, nothing.crossing_at, nothing.predicted) == (0.0, None, False)
    assert nothing.detail == (
        f"memory of {name} (memory): no series in the last 2.0 d (otlp store); no prediction"
    )

    now = time.time()
    await write(factory, name, np.array([now - 600, now - 300, now]), np.array([1.0, 2.0, 3.0]))
    few = await forecast(acts, rule)
    assert few.probability == 0.0 and not few.predicted
    assert "3 points in the last 2.0 d (otlp store); a forecast needs at least 6" in few.detail


async def test_an_unknown_rule_or_a_query_the_store_cannot_answer_is_not_retried(
    factory: sessionmaker[Session],
) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    rule = rule_of(name, metric="sum(rate(x[5m]))")
    acts = activities(factory, ServiceCatalog(services=[service_of(name)]), rule)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(acts.run_forecast, RunForecastInput(rule="gone"))
    assert caught.value.non_retryable and caught.value.type == "ConfigError"
    assert caught.value.message == f"unknown forecast rule 'gone' (known: {rule.name})"

    with pytest.raises(ApplicationError) as caught:
        await forecast(acts, rule)
    assert caught.value.non_retryable and caught.value.type == "ConfigError"
    assert "the OTLP series store answers only" in caught.value.message


# --- choose_window ----------------------------------------------------------------------------

WEDNESDAY_10 = datetime(2024, 6, 5, 10, 0, tzinfo=UTC)
"""a Wednesday, 10:00 UTC: the clock of the window tests"""
WED_14 = MaintenanceWindow(days=["wed"], start="14:00", duration="2h")
SAT_PARIS = MaintenanceWindow(days=["sat"], start="02:00", duration="3h", timezone="Europe/Paris")


def chooser(
    factory: sessionmaker[Session] | None, catalog: ServiceCatalog, at: datetime = WEDNESDAY_10
) -> ForecastActivities:
    return ForecastActivities(
        ForecastRules(), catalog, EVIDENCE, session_factory=factory, clock=at.timestamp
    )


async def choose(
    acts: ForecastActivities, service: str, crossing: datetime | None, workflow_id: str = "heal-me"
) -> ChosenWindow:
    return await ActivityEnvironment().run(
        acts.choose_window,
        ChooseWindowInput(service=service, crossing_at=crossing, workflow_id=workflow_id),
    )


async def test_the_window_before_the_crossing_is_chosen(factory: sessionmaker[Session]) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    acts = chooser(factory, ServiceCatalog(services=[service_of(name, WED_14, SAT_PARIS)]))
    chosen = await choose(acts, name, WEDNESDAY_10 + timedelta(hours=10))
    assert not chosen.act_now
    assert (chosen.start, chosen.end) == (
        datetime(2024, 6, 5, 14, 0, tzinfo=UTC),
        datetime(2024, 6, 5, 16, 0, tzinfo=UTC),
    )
    # off-peak +30, free +20, starts after 40 % of the 10 h left -12
    assert chosen.score == pytest.approx(38.0)
    assert chosen.reasons[:3] == ["Wed 2024-06-05 14:00 UTC: score +38", "off-peak +30",
                                  "resources free +20"]  # fmt: skip
    assert chosen.reasons[-1] == "next best: now (score +20)"

    # no crossing expected: no urgency, Wednesday's and Saturday's windows tie, the earliest wins
    chosen = await choose(acts, name, None)
    assert chosen.start == datetime(2024, 6, 5, 14, 0, tzinfo=UTC)
    assert chosen.score == pytest.approx(50.0)
    assert chosen.reasons[-1] == "next best: Sat 2024-06-08 00:00 UTC (score +50)"


async def test_acting_now_when_every_window_ends_after_the_crossing(
    factory: sessionmaker[Session],
) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    acts = chooser(factory, ServiceCatalog(services=[service_of(name, WED_14, SAT_PARIS)]))
    chosen = await choose(acts, name, WEDNESDAY_10 + timedelta(hours=5))  # 15:00, mid-window
    assert chosen.act_now and chosen.start == WEDNESDAY_10 and chosen.end is None
    assert chosen.reasons[0] == "now: score +20"
    assert chosen.reasons[-1] == "next best: Wed 2024-06-05 14:00 UTC (score +50, too late)"


async def test_without_windows_or_a_database_act_now_and_say_why(
    factory: sessionmaker[Session],
) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    catalog = ServiceCatalog(services=[service_of(name)])
    chosen = await choose(chooser(factory, catalog), name, WEDNESDAY_10 + timedelta(hours=3))
    assert chosen.act_now
    assert chosen.reasons[:3] == [
        f"service {name!r} declares no maintenance window",
        "now: score +20",
        "resources free +20",
    ]
    chosen = await choose(chooser(None, catalog), name, None)
    assert chosen.act_now and chosen.score == 0
    assert chosen.reasons[1] == "other healings unknown (no database): no option counts as free"

    unknown = await choose(chooser(factory, catalog), "nope", None)
    assert unknown.act_now and "not in the catalog" in unknown.reasons[0]


async def test_another_healing_of_the_service_is_a_conflict_but_not_this_one(
    factory: sessionmaker[Session],
) -> None:
    """A window in progress (09:00-11:00) while another healing holds one of the service's
    targets: the window and acting now both count it; a lock of the choosing healing itself
    does not count."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    in_progress = MaintenanceWindow(days=["wed"], start="09:00", duration="2h")
    acts = chooser(factory, ServiceCatalog(services=[service_of(name, in_progress)]))
    guardrails = Guardrails(factory)
    other = Run(f"heal-other-{name}", "run-1")
    target = target_key(name, f"{name}-1")
    guardrails.hold(target, other, WEDNESDAY_10, dry_run=False)
    try:
        chosen = await choose(acts, name, WEDNESDAY_10 + timedelta(hours=8))
        assert not chosen.act_now and chosen.start == WEDNESDAY_10  # the window, from now
        assert "1 conflicting healing(s) or change(s) -10" in chosen.reasons
        assert "resources free +20" not in chosen.reasons
        assert chosen.score == pytest.approx(20.0)  # off-peak +30, one conflict -10
        assert chosen.reasons[-1] == "next best: now (score -10)"

        mine = await choose(acts, name, WEDNESDAY_10 + timedelta(hours=8), other.workflow_id)
        assert "resources free +20" in mine.reasons and mine.score == pytest.approx(50.0)
    finally:
        guardrails.release(other)
