"""Recovery validation: is the target healthy again, and does it stay healthy?

What "healthy" means is a list of criteria (``domain/criteria.py``), all of which must hold at
every check: the plan's (its solution's ``validation``), else the service's (``services.yaml``:
``validation``), else the fault's health probe and catalog metric (``probe``, as before there
were criteria). A check evaluates every criterion, concurrently:

- ``metric``: the latest value of the expression's left-hand side, within the last
  ``max(2 * interval_s, 30s)``: one of the service's evidence queries
  (``evidence.metrics.queries``, rendered with ``core.catalog.query_variables``) or, when it
  names none, PromQL as written; read from where evidence reads series
  (``activities.evidence.metrics.metric_source``: Prometheus, else the intake's OTLP store).
  It holds when the comparison does.
- ``alert_resolved``: holds once the healing received the fault's ``resolved`` report
  (``resolved_at``); before that, when Alertmanager lists none of the fault's own alerts
  (``activities.evidence.alerts.is_own``) as active.
- ``rollout``: the target Deployment or StatefulSet has observed its latest generation and its
  desired, current, updated, ready and available replicas agree; and no container of its pods
  restarted since the first check of the window (restart counts per pod from that check; a pod
  that appeared since counts all its restarts). The cluster is the one the Kubernetes actions
  and evidence use (``kubernetes_client``).
- ``probe``: the health probe answers 2xx (if the fault has a ``health_url``) and the catalog
  metric reads at most its ``max`` (if the fault has a ``metric``).

A criterion that cannot be evaluated at a check (its source did not answer, no value to read)
is ``ok=None`` there: that fails the check unless the criterion is ``optional``, which is then
reported and ignored. One that can never be evaluated (no metrics source, an unknown query
placeholder, no Alertmanager and no ``resolved`` report, a target that is no Kubernetes
workload, a fault with neither health URL nor metric) ends validation before the first check
with ``healthy=False``, unless it is optional; and when nothing is left to evaluate, the result
is ``healthy=False`` as well, because claiming a recovery nobody observed would teach the
knowledge base a success that may not be one.

Checks run every ``interval_s`` until ``window_s`` has passed — at least one check, the last
one at or after the end of the window. The first failing check ends validation with
``healthy=False``. Grace period: a restarted target needs a moment to listen again, and a
service that judges its health over a window of requests needs that window to drain. With
``grace_s`` (the policy's ``validation_grace_s``) every criterion must pass one check within
``grace_s``, then every check through ``window_s`` counted from that first passing check.
Without it (histories from before), a failing check that starts within the first
``min(interval_s, 5s)`` of the window is retried. Failing checks are retried every
``min(interval_s, 0.5s)`` and still counted in ``failures``.

The result's ``criteria`` holds each criterion's verdict at its last check with the values it
read (the last 20); ``detail`` names the first failing criterion and its values.

Time: the activity runs about ``window_s`` plus the grace period plus one check (the slowest
criterion: up to two probe timeouts, or one evidence or Kubernetes request timeout); a check
heartbeats, so the heartbeat timeout must exceed ``interval_s`` plus that.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from selfheal.activities.actions.kubernetes import (
    KubeApi,
    _apps,
    _core,
    _selector_string,
    kubernetes_client,
)
from selfheal.activities.evidence.alerts import (
    AlertmanagerError,
    AlertsProvider,
    alerts_provider,
    is_own,
)
from selfheal.activities.evidence.kubernetes import MAX_PODS, Workload, pod_facts
from selfheal.activities.evidence.metrics import (
    MetricSource,
    UnsupportedQuery,
    metric_source,
    read_latest,
)
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, query_variables
from selfheal.core.probes import http_client, probe_health, read_metric
from selfheal.core.prometheus import PrometheusError, render_query
from selfheal.core.settings import EvidenceSettings, KubernetesSettings
from selfheal.domain import Fault, KnowledgeBaseError, TargetError, ValidationResult
from selfheal.domain.criteria import CriterionResult, Expression, ValidationCriterion
from selfheal.domain.payloads import ValidateRecoveryInput
from selfheal.workflows.contract import VALIDATE_RECOVERY, implements

GRACE_MAX_S = 5.0
GRACE_RETRY_S = 0.5
LOOKBACK_MIN_S = 30.0
"""a metric criterion reads the latest value within max(2 x interval_s, this)"""
VALUES_KEPT = 20
ROLLOUT_KINDS = ("deployment", "statefulset")
_BODY_EXCERPT = 200
_VALUES_SHOWN = 5

Obj = dict[str, Any]


class Unevaluable(Exception):
    """A criterion that no check could evaluate; the message says why."""


@dataclass(frozen=True)
class Reading:
    """One criterion at one check: ``ok`` None when it could not be evaluated."""

    ok: bool | None
    detail: str
    value: float | None = None


class Evaluator(Protocol):
    criterion: ValidationCriterion

    async def read(self, in_window: bool) -> Reading:
        """``in_window``: the stabilization window has begun (a check passed already)."""
        ...


# --- the pure part --------------------------------------------------------------------------


def passes(ok: bool | None, optional: bool) -> bool:
    """A reading that does not fail the check (as ``CriterionResult.passed``)."""
    return bool(ok) or (ok is None and optional)


def lookback_s(interval_s: float) -> float:
    return max(2 * interval_s, LOOKBACK_MIN_S)


def metric_query(
    expression: Expression, service: ServiceSpec | None, variables: Mapping[str, str]
) -> str:
    """The PromQL a metric criterion reads: the service's evidence query named by the
    expression's left-hand side, rendered; else the left-hand side as written. Raises
    ``Unevaluable`` for a query with an unknown placeholder."""
    queries = service.evidence.metrics.queries if service is not None else {}
    template = queries.get(expression.lhs)
    if template is None:
        return expression.lhs
    try:
        return render_query(template, variables)
    except KeyError as exc:
        raise Unevaluable(f"query {expression.lhs!r}: {exc.args[0]}") from None


def rollout_problem(workload: Obj) -> str | None:
    """None when the workload's rollout is complete, else what is missing: its latest
    generation not yet observed, or current/updated/ready/available replicas that are not the
    desired count. A StatefulSet of a cluster before 1.22 reports no available replicas: its
    ready ones stand in."""
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    generation = int((workload.get("metadata") or {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return f"generation {generation} not yet observed by the controller (at {observed})"
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    ready = int(status.get("readyReplicas") or 0)
    available = status.get("availableReplicas")
    if available is None and workload.get("kind") == "StatefulSet":
        available = ready
    counts = {
        "current": int(status.get("replicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": ready,
        "available": int(available or 0),
    }
    lagging = [f"{count} {name}" for name, count in counts.items() if count != desired]
    return f"{desired} desired, " + ", ".join(lagging) if lagging else None


def pod_restarts(pods: Sequence[Obj]) -> dict[str, int]:
    """Container restarts (``restartCount``, init containers too) by pod uid."""
    counts: dict[str, int] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        counts[str(metadata.get("uid") or metadata.get("name"))] = int(
            pod_facts([pod])["k8s.restarts"]
        )
    return counts


def restarts_since(baseline: Mapping[str, int], now: Mapping[str, int]) -> int:
    """Restarts since ``baseline`` was read: a pod's increase, all restarts of a pod that was
    not there; a pod that went away takes its restarts with it (replaced, not restarted)."""
    return sum(max(count - baseline.get(pod, 0), 0) for pod, count in now.items())


def show_values(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[-_VALUES_SHOWN:])
    return ("…, " if len(values) > _VALUES_SHOWN else "") + shown


@dataclass
class Tally:
    """What one criterion's evaluator read through the window."""

    evaluator: Evaluator
    values: deque[float] = field(default_factory=lambda: deque(maxlen=VALUES_KEPT))
    last: Reading | None = None
    checks: int = 0
    failed: int = 0
    unknown: int = 0

    def add(self, reading: Reading) -> None:
        self.last = reading
        self.checks += 1
        self.failed += reading.ok is False
        self.unknown += reading.ok is None
        if reading.value is not None:
            self.values.append(reading.value)

    @property
    def criterion(self) -> ValidationCriterion:
        return self.evaluator.criterion

    @property
    def passed(self) -> bool:
        return self.last is not None and passes(self.last.ok, self.criterion.optional)

    def problem(self, *, with_label: bool = True) -> str:
        """The last reading, for the result's detail: ``label: detail (values ...)``."""
        detail = self.last.detail if self.last is not None else "not evaluated"
        if not with_label:
            return detail
        values = f" (values {show_values(list(self.values))})" if self.values else ""
        return f"{self.criterion.label}: {detail}{values}"

    def result(self) -> CriterionResult:
        last = self.last or Reading(None, "not evaluated")
        notes = []
        if self.failed and last.ok is not False:
            notes.append(f"failed {self.failed} of {self.checks} checks")
        if self.unknown and last.ok is not None:
            notes.append(f"not evaluated at {self.unknown} of {self.checks} checks")
        return CriterionResult(
            criterion=self.criterion.label,
            kind=self.criterion.kind,
            ok=last.ok,
            optional=self.criterion.optional,
            values=list(self.values),
            detail=last.detail + (f" ({'; '.join(notes)})" if notes else ""),
        )


def unevaluated(criterion: ValidationCriterion, reason: str) -> CriterionResult:
    return CriterionResult(
        criterion=criterion.label,
        kind=criterion.kind,
        ok=None,
        optional=criterion.optional,
        detail=reason,
    )


# --- the evaluators -------------------------------------------------------------------------


class ProbeEvaluator:
    """The health probe and the catalog metric, as validation always checked them."""

    def __init__(
        self,
        criterion: ValidationCriterion,
        fault: Fault,
        http: httpx.AsyncClient,
        timeout_s: float,
    ) -> None:
        if not fault.health_url and fault.metric is None:
            raise Unevaluable("the fault has neither a health_url nor a metric")
        self.criterion = criterion
        self._fault = fault
        self._http = http
        self._timeout_s = timeout_s

    async def read(self, in_window: bool) -> Reading:
        fault = self._fault
        if fault.health_url:
            probe = await probe_health(self._http, fault.health_url, self._timeout_s)
            if not probe.ok:
                body = json.dumps(probe.body)[:_BODY_EXCERPT] if probe.body else ""
                detail = f"health probe {probe.url}: {probe.detail}" + (f" {body}" if body else "")
                return Reading(False, detail)
        if fault.metric is None:
            return Reading(True, f"health probe {fault.health_url}: 2xx")
        metric = fault.metric
        reading = await read_metric(self._http, metric, self._timeout_s)
        if reading.value is None:
            return Reading(False, f"metric {metric.name}: {reading.error}")
        if reading.value > metric.max:
            detail = f"metric {metric.name} = {reading.value:g} > max {metric.max:g}"
            return Reading(False, detail, reading.value)
        return Reading(True, f"metric {metric.name} = {reading.value:g}", reading.value)


class MetricEvaluator:
    def __init__(
        self,
        criterion: ValidationCriterion,
        expression: Expression,
        query: str,
        source: MetricSource,
        lookback: float,
    ) -> None:
        self.criterion = criterion
        self._expression = expression
        self._query = query
        self._source = source
        self._lookback_s = lookback

    async def read(self, in_window: bool) -> Reading:
        lhs = self._expression.lhs
        try:
            value = await read_latest(self._source, self._query, lookback_s=self._lookback_s)
        except (UnsupportedQuery, PrometheusError, KnowledgeBaseError) as exc:
            return Reading(None, f"{self._source.name}: {exc}")
        if value is None:
            return Reading(
                None, f"no value of {lhs} in the last {self._lookback_s:g}s ({self._source.name})"
            )
        if self._expression.holds(value):
            return Reading(True, f"{lhs} = {value:.4g}", value)
        expected = f"{self._expression.op} {self._expression.threshold:g}"
        return Reading(False, f"{lhs} = {value:.4g}, expected {expected}", value)


class AlertEvaluator:
    def __init__(
        self,
        criterion: ValidationCriterion,
        fault: Fault,
        resolved_at: datetime | None,
        alerts: AlertsProvider | None,
    ) -> None:
        if resolved_at is None and alerts is None:
            raise Unevaluable(
                "no 'resolved' report received and no Alertmanager to ask "
                "(SELFHEAL_EVIDENCE__ALERTMANAGER_URL)"
            )
        self.criterion = criterion
        self._fault = fault
        self._resolved_at = resolved_at
        self._alerts = alerts

    async def read(self, in_window: bool) -> Reading:
        if self._resolved_at is not None:
            return Reading(True, f"'resolved' report received at {self._resolved_at.isoformat()}")
        assert self._alerts is not None  # the constructor refused neither
        try:
            firing = await self._alerts.firing()
        except AlertmanagerError as exc:
            return Reading(None, f"alertmanager: {exc}")
        own = sorted({a.name for a in firing if is_own(a, self._fault)})
        if own:
            return Reading(False, f"still active in Alertmanager: {', '.join(own)}", len(own))
        return Reading(True, "no alert of the fault active in Alertmanager", 0.0)


class RolloutEvaluator:
    def __init__(self, criterion: ValidationCriterion, kube: KubeApi, workload: Workload) -> None:
        self.criterion = criterion
        self._kube = kube
        self._workload = workload
        self._baseline: dict[str, int] | None = None

    async def read(self, in_window: bool) -> Reading:
        workload = self._workload
        where = f"{workload.kind} {workload.namespace}/{workload.name}"
        try:
            obj = await self._kube.get(
                _apps(workload.namespace, f"{workload.kind}s", workload.name)
            )
            selector = workload.selector or _selector_string(
                (obj.get("spec") or {}).get("selector") or {}
            )
            if not selector:
                return Reading(None, f"{where} selects no pods")
            listed = await self._kube.get(
                _core(workload.namespace, "pods"), labelSelector=selector, limit=str(MAX_PODS)
            )
        except TargetError as exc:
            return Reading(None, str(exc))
        counts = pod_restarts(list(listed.get("items") or []))
        # Restarts while the target recovers are part of recovering; the window starts clean.
        if self._baseline is None or not in_window:
            self._baseline = counts
        restarts = restarts_since(self._baseline, counts)
        problem = rollout_problem(obj)
        if problem is not None:
            return Reading(False, f"{where}: rollout incomplete: {problem}", float(restarts))
        if restarts:
            detail = f"{where}: {restarts} container restart(s) since the window began"
            return Reading(False, detail, float(restarts))
        return Reading(True, f"{where}: rolled out, no container restart", 0.0)


def rollout_workload(service: ServiceSpec | None, fault: Fault) -> Workload:
    """The fault's target as a workload whose rollout can be judged; raises ``Unevaluable``."""
    target = service.target(fault.target) if service is not None else None
    if service is None or target is None:
        raise Unevaluable(
            f"target {fault.target!r} of service {fault.service!r} is not in the catalog"
        )
    if target.kind not in ROLLOUT_KINDS:
        raise Unevaluable(
            f"target {target.name!r} is a {target.kind}, not a Deployment or StatefulSet"
        )
    wanted = service.evidence.kubernetes
    namespace = wanted.namespace or target.namespace or fault.labels.get("namespace")
    return Workload(
        kind=target.kind,
        name=target.name,
        namespace=namespace or "default",
        selector=wanted.selector,
    )


# --- the activity ---------------------------------------------------------------------------


class ValidationActivities:
    def __init__(
        self,
        http: httpx.AsyncClient | None = None,
        probe_timeout_s: float = 3.0,
        *,
        catalog: ServiceCatalog | None = None,
        evidence: EvidenceSettings | None = None,
        session_factory: sessionmaker[Session] | None = None,
        kubernetes: KubernetesSettings | None = None,
    ) -> None:
        self._http = http
        self._timeout_s = probe_timeout_s
        self._catalog = catalog or ServiceCatalog()
        self._evidence = evidence or EvidenceSettings()
        self._session_factory = session_factory
        api = kubernetes_client(kubernetes) if kubernetes is not None else None
        self._kube = KubeApi(api) if api is not None else None

    @implements(VALIDATE_RECOVERY)
    async def validate_recovery(self, input: ValidateRecoveryInput) -> ValidationResult:
        """An unhealthy target is an answer (``healthy=False``), not an error."""
        window_s = max(input.window_s, 0.0)
        service = self._catalog.get(input.fault.service)
        criteria = input.criteria or (service.validation if service is not None else [])
        # Without criteria, the probe as before: its detail reads as it always did.
        implicit = not criteria
        if implicit:
            criteria = [ValidationCriterion(kind="probe")]
        async with http_client(self._http) as http:
            slots: list[Evaluator | CriterionResult] = []
            for criterion in criteria:
                try:
                    slots.append(self._evaluator(criterion, input, service, http))
                except Unevaluable as exc:
                    slots.append(unevaluated(criterion, str(exc)))
            skipped = [s for s in slots if isinstance(s, CriterionResult)]
            blocking = next((s for s in skipped if not s.optional), None)
            if blocking is None and len(skipped) < len(slots):
                return await self._validate(input, window_s, slots, implicit)
        if implicit:
            why = blocking.detail if blocking is not None else ""
        elif blocking is not None:
            why = f"{blocking.criterion}: {blocking.detail}"
        else:
            why = "no criterion can be evaluated: " + "; ".join(
                f"{s.criterion}: {s.detail}" for s in skipped
            )
        verdicts = [
            s if isinstance(s, CriterionResult) else unevaluated(s.criterion, "not checked")
            for s in slots
        ]
        unchecked = ValidationResult.unchecked(window_s, f"cannot validate: {why}")
        return unchecked.model_copy(update={"criteria": verdicts})

    def _evaluator(
        self,
        criterion: ValidationCriterion,
        input: ValidateRecoveryInput,
        service: ServiceSpec | None,
        http: httpx.AsyncClient,
    ) -> Evaluator:
        """Raises ``Unevaluable`` when no check could evaluate ``criterion``."""
        fault = input.fault
        if criterion.kind == "probe":
            return ProbeEvaluator(criterion, fault, http, self._timeout_s)
        if criterion.kind == "alert_resolved":
            alerts = alerts_provider(self._evidence, http)
            return AlertEvaluator(criterion, fault, input.resolved_at, alerts)
        if criterion.kind == "rollout":
            workload = rollout_workload(service, fault)
            if self._kube is None:
                raise Unevaluable(
                    "no Kubernetes cluster configured (SELFHEAL_KUBERNETES__KUBECONFIG or "
                    "SELFHEAL_KUBERNETES__IN_CLUSTER)"
                )
            return RolloutEvaluator(criterion, self._kube, workload)
        expression = criterion.expression
        assert expression is not None  # the model requires expr for kind metric
        source = metric_source(self._evidence, http, self._session_factory)
        if source is None:
            raise Unevaluable(
                "no metrics source (SELFHEAL_EVIDENCE__PROMETHEUS_URL, or a database with the "
                "intake's OTLP series)"
            )
        variables = query_variables(self._catalog, fault.service, fault)
        query = metric_query(expression, service, variables)
        return MetricEvaluator(criterion, expression, query, source, lookback_s(input.interval_s))

    async def _validate(
        self,
        input: ValidateRecoveryInput,
        window_s: float,
        slots: list[Evaluator | CriterionResult],
        implicit: bool,
    ) -> ValidationResult:
        """Check every evaluator of ``slots`` until the window has passed or a check fails
        (the other slots are criteria reported as not evaluable, all optional)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        # With a grace period given, the window counts from the first passing check: the target
        # recovers within grace_s, then stays healthy for window_s.
        recover_first = input.grace_s is not None
        grace_s = input.grace_s if input.grace_s is not None else min(input.interval_s, GRACE_MAX_S)
        retry_s = min(input.interval_s, GRACE_RETRY_S)
        rows = [s if isinstance(s, CriterionResult) else Tally(s) for s in slots]
        tallies = [row for row in rows if isinstance(row, Tally)]
        checks = failures = 0
        healthy_since: float | None = None if recover_first else start

        def result(healthy: bool, detail: str) -> ValidationResult:
            return ValidationResult(
                healthy=healthy,
                checks=checks,
                failures=failures,
                window_s=window_s,
                detail=detail,
                criteria=[
                    row if isinstance(row, CriterionResult) else row.result() for row in rows
                ],
            )

        while True:
            check_started = loop.time() - start
            in_window = healthy_since is not None
            readings = await asyncio.gather(*(t.evaluator.read(in_window) for t in tallies))
            for tally, reading in zip(tallies, readings, strict=True):
                tally.add(reading)
            failing = next((t for t in tallies if not t.passed), None)
            problem = None if failing is None else failing.problem(with_label=not implicit)
            checks += 1
            failures += problem is not None
            activity.heartbeat({"checks": checks, "failures": failures, "last": problem})
            if problem is not None:
                recovering = healthy_since is None or not recover_first
                if recovering and check_started < grace_s:
                    await asyncio.sleep(retry_s)
                    continue
                where = (
                    f"not healthy within the {grace_s:g}s grace period"
                    if healthy_since is None
                    else f"{check_started:.1f}s into the window"
                )
                return result(False, f"{problem} (check {checks}, {where})")
            if healthy_since is None:
                healthy_since = start + check_started
            remaining = window_s - (loop.time() - healthy_since)
            if remaining <= 0:
                break
            await asyncio.sleep(min(input.interval_s, remaining))
        grace_note = f", {failures} failed within the grace period" if failures else ""
        detail = f"healthy for {window_s:g}s ({checks} checks{grace_note})"
        if not implicit:
            verdicts = result(True, "").criteria
            detail += ": " + ", ".join(v.criterion for v in verdicts if v.ok)
            ignored = [v.criterion for v in verdicts if v.ok is None]
            if ignored:
                detail += f"; ignored (optional, not evaluated): {', '.join(ignored)}"
        return result(True, detail)
