"""The pure part of activities/validation.py: a workload's rollout, restarts since a baseline,
which query a metric criterion reads, which workload a rollout criterion judges, and what a
criterion's tally reports. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.activities.validation import (
    Reading,
    Tally,
    Unevaluable,
    lookback_s,
    metric_query,
    pod_restarts,
    restarts_since,
    rollout_problem,
    rollout_workload,
    show_values,
)
from selfheal.core.catalog import (
    EvidenceSpec,
    KubernetesEvidence,
    MetricsEvidence,
    ServiceSpec,
    TargetSpec,
)
from selfheal.domain import Fault
from selfheal.domain.criteria import Expression, ValidationCriterion

Obj = dict[str, Any]


def workload(
    kind: str = "Deployment",
    *,
    generation: int = 3,
    replicas: int | None = 3,
    **status: int,
) -> Obj:
    full = {
        "observedGeneration": 3,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    full.update(status)
    spec = {} if replicas is None else {"replicas": replicas}
    return {"kind": kind, "metadata": {"generation": generation}, "spec": spec, "status": full}


def test_a_complete_rollout_has_no_problem() -> None:
    assert rollout_problem(workload()) is None


def test_a_generation_the_controller_has_not_seen_is_incomplete() -> None:
    problem = rollout_problem(workload(generation=4))
    assert problem == "generation 4 not yet observed by the controller (at 3)"


def test_replicas_that_lag_are_named_with_their_counts() -> None:
    problem = rollout_problem(workload(updatedReplicas=1, readyReplicas=2, availableReplicas=2))
    assert problem == "3 desired, 1 updated, 2 ready, 2 available"
    # old pods still terminating: more current replicas than desired
    shrinking = workload(replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2)
    assert rollout_problem(shrinking) == "2 desired, 3 current"


def test_counts_the_api_omits_are_zero_and_replicas_default_to_one() -> None:
    bare = {"kind": "Deployment", "metadata": {"generation": 1}, "spec": {}, "status": {}}
    assert rollout_problem(bare) == "generation 1 not yet observed by the controller (at 0)"
    bare["status"] = {"observedGeneration": 1}
    assert rollout_problem(bare) == "1 desired, 0 current, 0 updated, 0 ready, 0 available"
    scaled_to_zero = workload(replicas=0)
    scaled_to_zero["status"] = {"observedGeneration": 3}
    assert rollout_problem(scaled_to_zero) is None


def test_a_statefulset_without_available_replicas_counts_its_ready_ones() -> None:
    old = workload("StatefulSet")
    del old["status"]["availableReplicas"]
    assert rollout_problem(old) is None
    old["status"]["readyReplicas"] = 2
    assert rollout_problem(old) == "3 desired, 2 ready, 2 available"
    # a Deployment's omitted availableReplicas means none
    deployment = workload()
    del deployment["status"]["availableReplicas"]
    assert rollout_problem(deployment) == "3 desired, 0 available"


def pod(uid: str, *restarts: int, init: int = 0) -> Obj:
    statuses = [{"name": f"c{i}", "restartCount": n} for i, n in enumerate(restarts)]
    status: Obj = {"containerStatuses": statuses}
    if init:
        status["initContainerStatuses"] = [{"name": "init", "restartCount": init}]
    return {"metadata": {"uid": uid, "name": f"pod-{uid}"}, "status": status}


def test_restarts_are_summed_per_pod_over_all_containers() -> None:
    assert pod_restarts([pod("a", 1, 2, init=1), pod("b"), pod("c", 0)]) == {
        "a": 4,
        "b": 0,
        "c": 0,
    }


def test_restarts_since_count_increases_and_every_restart_of_a_new_pod() -> None:
    baseline = {"a": 4, "b": 0, "gone": 7}
    assert restarts_since(baseline, baseline) == 0
    assert restarts_since(baseline, {"a": 5, "b": 0}) == 1  # a pod replaced is no restart
    assert restarts_since(baseline, {"a": 4, "b": 2, "new": 3}) == 5
    assert restarts_since(baseline, {"a": 0}) == 0  # a count never goes below its baseline


def service(**queries: str) -> ServiceSpec:
    return ServiceSpec(
        name="checkout",
        targets=[
            TargetSpec(name="checkout", kind="deployment", namespace="shop"),
            TargetSpec(name="db", kind="statefulset"),
            TargetSpec(name="worker", kind="process"),
        ],
        evidence=EvidenceSpec(metrics=MetricsEvidence(queries=queries)),
    )


VARIABLES = {"service": "checkout", "target": "checkout", "namespace": "shop"}


def test_a_metric_criterion_reads_the_service_query_its_lhs_names() -> None:
    spec = service(error_ratio='errors{service="${service}",ns="${namespace}"}')
    expression = Expression.parse("error_ratio < 0.01")
    assert metric_query(expression, spec, VARIABLES) == 'errors{service="checkout",ns="shop"}'


def test_any_other_lhs_is_promql_as_written() -> None:
    spec = service(error_ratio="errors")
    expression = Expression.parse('sum(rate(errors{job="x"}[1m])) == 0')
    assert metric_query(expression, spec, VARIABLES) == 'sum(rate(errors{job="x"}[1m]))'
    assert metric_query(Expression.parse("error_ratio < 1"), None, VARIABLES) == "error_ratio"


def test_a_query_with_an_unknown_placeholder_cannot_be_evaluated() -> None:
    spec = service(error_ratio='errors{service="${servce}"}')
    with pytest.raises(Unevaluable, match=r"query 'error_ratio': unknown placeholder \$\{servce\}"):
        metric_query(Expression.parse("error_ratio < 0.01"), spec, VARIABLES)


def test_the_lookback_is_two_intervals_and_at_least_thirty_seconds() -> None:
    assert lookback_s(1.0) == 30.0
    assert lookback_s(20.0) == 40.0


def fault(target: str | None, **labels: str) -> Fault:
    return Fault(service="checkout", type="crash", target=target, labels=labels)


def test_the_rollout_workload_is_the_targets_with_its_namespace() -> None:
    found = rollout_workload(service(), fault("checkout", namespace="elsewhere"))
    assert (found.kind, found.name, found.namespace, found.selector) == (
        "deployment",
        "checkout",
        "shop",
        None,
    )
    # no namespace in the catalog: the fault's label, else default
    assert rollout_workload(service(), fault("db", namespace="data")).namespace == "data"
    assert rollout_workload(service(), fault("db")).namespace == "default"
    # the service's evidence settings win
    spec = service()
    spec.evidence.kubernetes = KubernetesEvidence(namespace="ops", selector="app=checkout")
    overridden = rollout_workload(spec, fault(None))
    assert (overridden.name, overridden.namespace, overridden.selector) == (
        "checkout",
        "ops",
        "app=checkout",
    )


def test_only_deployments_and_statefulsets_have_a_rollout() -> None:
    with pytest.raises(Unevaluable, match="'worker' is a process, not a Deployment or StatefulSet"):
        rollout_workload(service(), fault("worker"))
    with pytest.raises(Unevaluable, match="not in the catalog"):
        rollout_workload(None, fault("checkout"))
    with pytest.raises(Unevaluable, match="not in the catalog"):
        rollout_workload(service(), fault("ghost"))


class Fixed:
    """An evaluator that is never asked: tallies only read its criterion."""

    def __init__(self, criterion: ValidationCriterion) -> None:
        self.criterion = criterion

    async def read(self, in_window: bool) -> Reading:
        raise AssertionError("not called")


def tally(optional: bool = False) -> Tally:
    criterion = ValidationCriterion(kind="metric", expr="error_ratio < 0.05", optional=optional)
    return Tally(Fixed(criterion))


def test_a_tally_keeps_the_last_twenty_values_and_reports_the_last_verdict() -> None:
    t = tally()
    for i in range(25):
        t.add(Reading(True, f"error_ratio = {i}", float(i)))
    t.add(Reading(None, "prometheus: down"))
    t.add(Reading(False, "error_ratio = 0.2, expected < 0.05", 0.2))
    result = t.result()
    assert result.values == [float(i) for i in range(6, 25)] + [0.2]
    assert (result.ok, result.kind, result.criterion) == (False, "metric", "error_ratio < 0.05")
    assert result.detail == "error_ratio = 0.2, expected < 0.05 (not evaluated at 1 of 27 checks)"
    assert not t.passed
    assert t.problem() == (
        "error_ratio < 0.05: error_ratio = 0.2, expected < 0.05 (values …, 21, 22, 23, 24, 0.2)"
    )
    assert t.problem(with_label=False) == "error_ratio = 0.2, expected < 0.05"


def test_a_tally_that_held_at_last_says_how_often_it_did_not() -> None:
    t = tally()
    t.add(Reading(False, "error_ratio = 0.3, expected < 0.05", 0.3))
    t.add(Reading(None, "no value"))
    t.add(Reading(True, "error_ratio = 0.01", 0.01))
    result = t.result()
    assert result.ok is True and t.passed
    assert result.detail == (
        "error_ratio = 0.01 (failed 1 of 3 checks; not evaluated at 1 of 3 checks)"
    )


def test_an_unknown_reading_passes_only_an_optional_criterion() -> None:
    required, optional = tally(), tally(optional=True)
    for t in (required, optional):
        t.add(Reading(None, "prometheus: down"))
    assert not required.passed
    assert optional.passed
    assert optional.result().passed and optional.result().ok is None
    assert tally().result().detail == "not evaluated"


def test_values_show_the_last_five() -> None:
    assert show_values([0.1, 0.25]) == "0.1, 0.25"
    assert show_values([float(i) for i in range(7)]) == "…, 2, 3, 4, 5, 6"
