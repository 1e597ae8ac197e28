"""The metrics provider's pure part: shifts, the facts and findings, the store's selectors."""

from __future__ import annotations

import math

import pytest

from selfheal.activities.evidence.metrics import (
    QueryResult,
    UnsupportedQuery,
    assess,
    choose,
    parse_selector,
    rate,
    shift,
)
from selfheal.core.prometheus import Series

AT = 1_700_000_000.0
STEP = 15.0


def level(
    before: float, after: float, *, change_at: float = AT - 30, noise: float = 0.0
) -> list[tuple[float, float]]:
    """A series every 15 s over [AT-900, AT+120] at ``before`` then ``after`` from ``change_at``,
    with a small deterministic wiggle of amplitude ``noise``."""
    points = []
    t = AT - 900
    i = 0
    while t <= AT + 120:
        wiggle = noise * ((i % 5) - 2) / 2
        points.append((t, (after if t >= change_at else before) + wiggle))
        t += STEP
        i += 1
    return points


def test_a_jump_is_a_large_positive_z_with_medians_before_and_after() -> None:
    moved = shift(level(0.01, 0.4, noise=0.002), AT - 60)
    assert moved is not None
    assert moved.before == pytest.approx(0.01, abs=0.002)
    assert moved.after == pytest.approx(0.4, abs=0.002)
    assert moved.change == pytest.approx(moved.after - moved.before)
    assert moved.z > 50


def test_a_drop_is_negative_and_a_steady_series_is_near_zero() -> None:
    drop = shift(level(100.0, 20.0, noise=2.0), AT - 60)
    assert drop is not None and drop.z < -10
    steady = shift(level(100.0, 100.0, noise=2.0), AT - 60)
    assert steady is not None and abs(steady.z) < 1.5


def test_the_after_median_ignores_one_outlier_scrape() -> None:
    points = level(5.0, 5.0, noise=0.5)
    points[-3] = (points[-3][0], 500.0)  # one bad scrape after the fault
    moved = shift(points, AT - 60)
    assert moved is not None and abs(moved.z) < 3


def test_too_few_points_tell_nothing() -> None:
    assert shift([(AT - 100, 1.0), (AT, 5.0)], AT - 60) is None  # one point before
    assert shift([(AT - 300, 1.0), (AT - 200, 1.0)], AT - 60) is None  # nothing after


def test_the_series_that_moved_most_speaks_for_a_query() -> None:
    calm = Series({"instance": "a"}, level(1.0, 1.0, noise=0.1))
    moved = Series({"instance": "b"}, level(1.0, 9.0, noise=0.1))
    chosen = choose([calm, moved, Series({"instance": "c"})], AT - 60)
    assert chosen is not None and chosen.points == moved.points


def results() -> list[QueryResult]:
    return [
        QueryResult("checkout", "error_ratio", [Series({}, level(0.02, 0.3, noise=0.004))]),
        QueryResult("checkout", "latency_p99", [Series({}, level(0.2, 0.21, noise=0.01))]),
        QueryResult("payments", "error_ratio", [Series({}, level(0.01, 0.9, noise=0.002))]),
        QueryResult("ledger", "error_ratio", [Series({}, level(0.01, 0.01, noise=0.002))]),
        QueryResult("ledger", "saturation", error="template: unknown placeholder ${pod}"),
    ]


GRAPH = {"checkout": ["payments"], "payments": ["ledger"], "ledger": []}


def test_facts_for_the_service_its_dependencies_and_the_ranking() -> None:
    gathered = assess(results(), service="checkout", at=AT, graph=GRAPH)
    facts = gathered.facts
    assert facts["metrics.error_ratio.before"] == pytest.approx(0.02, abs=0.004)
    assert facts["metrics.error_ratio.after"] == pytest.approx(0.3, abs=0.004)
    assert facts["metrics.error_ratio.z"] > 10
    assert abs(facts["metrics.latency_p99.z"]) < 3
    assert facts["deps.payments.error_ratio.z"] > facts["metrics.error_ratio.z"]
    assert abs(facts["deps.ledger.error_ratio.z"]) < 3
    assert facts["deps.max.error_ratio.z"] == facts["deps.payments.error_ratio.z"]
    assert facts["deps.max.error_ratio.change"] == facts["deps.payments.error_ratio.change"]
    assert facts["deps.worst.error_ratio"] == "payments"
    assert facts["deps.ledger.saturation.error"].startswith("template: ")
    # checkout's errors are explained by its callee's: payments is the root cause
    assert facts["rca.top"] == "payments"
    assert facts["rca.top_score"] >= 3
    assert all(v is not None for v in facts.values())


def test_findings_point_at_what_moved_and_at_the_top_ranked() -> None:
    findings = assess(results(), service="checkout", at=AT, graph=GRAPH).findings
    shifts = {(f.component, f.facts["query"]) for f in findings if f.kind == "metric_shift"}
    assert shifts == {("checkout", "error_ratio"), ("payments", "error_ratio")}
    ranked = [f for f in findings if f.kind == "rca_rank"]
    assert [f.component for f in ranked] == ["payments"]
    assert all(0 < f.strength <= 1 for f in findings)


def test_nothing_anomalous_ranks_without_a_finding() -> None:
    calm = [QueryResult("checkout", "error_ratio", [Series({}, level(0.02, 0.02, noise=0.004))])]
    gathered = assess(calm, service="checkout", at=AT, graph=GRAPH)
    assert gathered.facts["rca.top"] == "checkout"
    assert gathered.facts["rca.top_score"] < 3
    assert gathered.findings == []


def test_a_timestamp_query_gives_its_age_at_the_fault() -> None:
    deployed = AT - 240
    points = [(t, deployed if t >= deployed else AT - 86400) for t, _ in level(0, 0)]
    gathered = assess(
        [QueryResult("checkout", "last_change_timestamp", [Series({}, points)])],
        service="checkout",
        at=AT,
    )
    assert gathered.facts["metrics.last_change_timestamp.age_s"] == pytest.approx(240)


def test_no_data_is_no_fact() -> None:
    gathered = assess(
        [QueryResult("checkout", "error_ratio", [])], service="checkout", at=AT, graph=GRAPH
    )
    assert gathered.facts == {}
    assert gathered.findings == []


def test_selectors_the_store_answers() -> None:
    selector = parse_selector('http_errors_ratio{service="a\\"b", route="/x,y"}')
    assert selector.name == "http_errors_ratio"
    assert selector.matchers == {"service": 'a"b', "route": "/x,y"}
    assert selector.rate_s is None
    bare = parse_selector("up")
    assert bare.name == "up" and bare.matchers == {}
    counted = parse_selector('rate(http.requests{service="a"}[5m])')
    assert counted.name == "http.requests" and counted.rate_s == 300


@pytest.mark.parametrize(
    "query",
    [
        'sum(rate(x{service="a"}[1m]))',
        'x{service=~"a|b"}',
        'x{service!="a"}',
        "x / y",
        'rate(x{service="a"}[0m])',
    ],
)
def test_other_promql_is_refused_saying_what_the_store_answers(query: str) -> None:
    with pytest.raises(UnsupportedQuery, match="answers only"):
        parse_selector(query)


def test_rate_is_per_second_and_survives_a_counter_reset() -> None:
    counter = [(0.0, 0.0), (10.0, 10.0), (20.0, 20.0), (30.0, 5.0), (40.0, 15.0)]
    rates = rate(counter, 20.0)
    assert rates[0][0] == 10.0 and rates[0][1] == pytest.approx(1.0)
    # over (10, 30]: +10, then a reset to 5 (counted as +5): 15 in 20 s
    assert dict(rates)[30.0] == pytest.approx(15 / 20)
    assert all(math.isfinite(v) for _, v in rates)
