"""The pure part of the side-effect guards: which guards are watched and why others are not,
when a guard trips (relative, absolute, for a duration), and the state a retried watch resumes
from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfheal.activities.side_effects import (
    WatchedGuard,
    WatchState,
    breach_detail,
    evaluate,
    guards_to_watch,
    resumed_state,
    tripped_at_start,
)
from selfheal.core.catalog import (
    EvidenceSpec,
    MetricsEvidence,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
    load_services,
)
from selfheal.domain import Fault
from selfheal.domain.criteria import GuardSpec

REPO = Path(__file__).resolve().parents[2]


def catalog() -> ServiceCatalog:
    """payments is called by checkout and by refunds; ledger is payments' own dependency."""
    queries = MetricsEvidence(
        queries={
            "error_ratio": 'errors{service="${service}"}',
            "latency_p99": 'p99{service="${service}", ns="${namespace}"}',
        }
    )
    evidence = EvidenceSpec(metrics=queries)
    return ServiceCatalog(
        services=[
            ServiceSpec(
                name="payments",
                depends_on=["ledger"],
                targets=[TargetSpec(name="pay-api", kind="deployment", namespace="shop")],
                evidence=evidence,
            ),
            ServiceSpec(name="checkout", depends_on=["payments"], evidence=evidence, guards=[]),
            ServiceSpec(
                name="refunds",
                depends_on=["payments"],
                guards=[
                    GuardSpec(name="errors", expr="error_ratio > 0.1"),
                    GuardSpec(name="raw", expr='sum(rate(http_5xx{job="${service}"}[1m])) > 3'),
                    GuardSpec(name="typo", expr='x{service="${servce}"} > 1'),
                    GuardSpec(name="recording", expr="job:errors:rate5m > 1"),
                ],
            ),
            ServiceSpec(name="ledger", evidence=evidence),
        ]
    )


def fault(service: str = "payments") -> Fault:
    return Fault(service=service, type="error_rate_high")


def guard(expr: str, *, relative: bool = False, for_s: float = 0.0) -> WatchedGuard:
    spec = GuardSpec(name="g", expr=expr, relative=relative, for_s=for_s)
    return WatchedGuard("svc", spec, "q")


def test_the_service_and_its_dependents_are_watched_not_its_dependencies() -> None:
    watched, skipped = guards_to_watch(catalog(), fault())
    assert [w.key for w in watched] == [
        "payments:success_rate_drop",
        "payments:latency_p99_rise",
        "payments:server_errors",
        "refunds:raw",
        "refunds:recording",
    ]
    assert not any(w.service == "ledger" for w in watched)
    # checkout declares no guards (an empty list, not unset): nothing of it is watched
    assert not any(w.service == "checkout" for w in watched)
    assert skipped == [
        "payments:connection_pool: no query 'pool_usage'",
        "refunds:errors: no query 'error_ratio'",
        "refunds:typo: unknown placeholder ${servce} (known: service, target, namespace)",
    ]


def test_queries_and_promql_are_rendered_for_their_own_service() -> None:
    watched, _ = guards_to_watch(catalog(), fault())
    queries = {w.key: w.query for w in watched}
    assert queries["payments:latency_p99_rise"] == 'p99{service="payments", ns="shop"}'
    assert queries["payments:success_rate_drop"] == 'errors{service="payments"}'
    assert queries["refunds:raw"] == 'sum(rate(http_5xx{job="refunds"}[1m])) > 3'.removesuffix(
        " > 3"
    )
    assert queries["refunds:recording"] == "job:errors:rate5m"


def test_an_unknown_service_watches_nothing_and_says_so() -> None:
    watched, skipped = guards_to_watch(catalog(), fault("nowhere"))
    assert watched == []
    assert skipped == ["nowhere: not in the service catalog"]


def test_a_guard_named_twice_is_watched_once() -> None:
    spec = ServiceSpec(
        name="a",
        guards=[GuardSpec(name="g", expr="up{} < 1"), GuardSpec(name="g", expr="up{} < 2")],
    )
    watched, skipped = guards_to_watch(ServiceCatalog(services=[spec]), fault("a"))
    assert [w.guard.expr for w in watched] == ["up{} < 1"]
    assert skipped == ["a:g: a guard of this name is declared twice"]


def test_a_relative_guard_compares_the_change() -> None:
    rise = guard("latency_p99 > 0.3", relative=True)
    assert evaluate(rise, 1.2, baseline=1.0, now=10, since=None) == (False, None)
    assert evaluate(rise, 1.31, baseline=1.0, now=10, since=None) == (True, 10)
    # a high value that did not move is not a side effect
    assert evaluate(rise, 5.0, baseline=5.0, now=10, since=None) == (False, None)


def test_an_absolute_guard_compares_the_value() -> None:
    pool = guard("pool_usage >= 0.9")
    assert evaluate(pool, 0.9, baseline=0.1, now=10, since=None) == (True, 10)
    assert evaluate(pool, 0.89, baseline=0.1, now=10, since=None) == (False, None)


def test_a_duration_must_hold_without_a_break() -> None:
    errors = guard("error_ratio > 0.15", for_s=60)
    assert evaluate(errors, 0.2, 0.0, now=100, since=None) == (False, 100)
    assert evaluate(errors, 0.2, 0.0, now=159, since=100) == (False, 100)
    assert evaluate(errors, 0.2, 0.0, now=160, since=100) == (True, 100)
    # a break starts the run again
    assert evaluate(errors, 0.1, 0.0, now=130, since=100) == (False, None)


def test_tripped_at_start() -> None:
    assert tripped_at_start(guard("pool_usage >= 0.9"), 0.95)
    assert not tripped_at_start(guard("pool_usage >= 0.9"), 0.5)
    # a relative guard compares no change at its start
    assert not tripped_at_start(guard("latency_p99 > 0.3", relative=True), 9.0)
    assert tripped_at_start(guard("latency_p99 < 0.3", relative=True), 9.0)


def test_the_breach_detail_says_what_moved() -> None:
    rise = guard("latency_p99 > 0.3", relative=True)
    assert breach_detail(rise, 1.5, 1.0, 0) == (
        "svc: latency_p99 went from 1 to 1.5 (change +0.5 > 0.3)"
    )
    errors = guard("error_ratio > 0.15", for_s=60)
    assert breach_detail(errors, 0.25, 0.01, 61.2) == (
        "svc: error_ratio = 0.25 > 0.15 (at start 0.01) for 61s"
    )


def test_the_state_resumes_from_heartbeat_details() -> None:
    state = WatchState(started_at=1.0, baseline={"a:g": 0.5}, skipped={"a:h": "why"})
    assert resumed_state([state.model_dump(mode="json")]) == state
    assert resumed_state([]) is None
    assert resumed_state([{"checks": 3}]) is None
    assert resumed_state(["text"]) is None


@pytest.mark.parametrize("lhs", ["pool_usage", "_x1"])
def test_a_bare_name_is_only_ever_a_query(lhs: str) -> None:
    spec = ServiceSpec(name="a", guards=[GuardSpec(name="g", expr=f"{lhs} > 1")])
    watched, skipped = guards_to_watch(ServiceCatalog(services=[spec]), fault("a"))
    assert watched == [] and skipped == [f"a:g: no query {lhs!r}"]


def test_the_documented_example_loads_and_watches_every_guard(tmp_path: Path) -> None:
    text = (REPO / "docs" / "side_effects.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert example is not None, "docs/side_effects.md has no services.yaml example"
    path = tmp_path / "services.yaml"
    path.write_text(example[1])
    watched, skipped = guards_to_watch(load_services(path), fault())
    assert skipped == []
    assert [w.key for w in watched] == [
        "payments:success_rate_drop",
        "payments:connection_pool",
        "payments:server_errors",
        "payments:restarts",
    ]
    assert watched[3].query == (
        'sum(increase(kube_pod_container_status_restarts_total{namespace="shop"}[5m]))'
    )
