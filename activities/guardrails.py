"""``check_guardrails`` and ``release_target``: may this healing act, right now?

At the start of a healing (``input.step`` None; the workflow asks after planning, before the
approval gate), in this order:

- ``unknown_service``: the fault's service is not in the catalog (``services.yaml``);
- ``kill_switch``: ``selfheal pause`` is in force;
- ``cooldown``: a healing that acted on the same target ended less than the service's
  ``cooldown_s`` ago (loop protection: the new fault is recorded and escalated, not healed);
- ``budget``: the service's ``budget_per_hour`` healings have acted within the last hour;
- ``target_busy``: another healing run holds the target's lock. Otherwise this run takes it
  (idempotent for the same run) and holds it until it ends, through the approval gate: while a
  healing waits for a human, a second fault of the same target (another fingerprint, another
  alert) waits at its own start instead of acting on the target unapproved. Holding is not
  acting: the run counts against the budget (and starts a cooldown when it ends) only from its
  first allowed mutating step.

Right before each step: an action this worker does not know is refused (``allowlist``); a
read-only step (``wait``) is allowed unchecked. Before a mutating step, in this order:

- ``unknown_service`` and ``kill_switch`` again;
- ``allowlist``: the action matches none of ``allowed_actions``; the step's namespace (its
  ``namespace`` param, else the action's default, else the target's) is not in
  ``allowed_namespaces``; the fault's target is not one of the service's targets; or the
  params cannot be resolved against the fault;
- ``blast_radius``: a ``max_pods`` param (``kubernetes.delete_pod``, ``kubernetes.drain``) above
  the limit, or a ``replicas`` param (``kubernetes.scale``) changing the workload by more than
  the limit. The limit is ``max_pods_per_step`` pods; with ``max_percent_per_step`` and a known
  replica count, the larger of that and the percentage of the replicas (rounded down). The
  replica count is the workload's, read from the Kubernetes API when the worker has one (the
  Deployment a scale names, the workload of a pod named by ``delete_pod``, else the fault's
  target when it is a Deployment or StatefulSet): desired replicas, or a DaemonSet's desired
  pods. Without an API, or when it cannot tell, the fault's ``values["replicas"]`` is used as
  before, and the decision's reason says which; a scale whose current count is still unknown
  is not limited (the reason says so too);
- ``fault_resolved`` (``fault_resolved=True``): with ``recheck_fault``, the fault's
  ``health_url`` answers 2xx and its ``metric`` reads at most its ``max`` — the fault no longer
  fires. A fault with neither cannot be re-checked and passes;
- ``budget`` again, for a healing that has not acted yet (approval may have taken an hour);
- ``target_busy``: another healing run holds the target's lock (a healing started before the
  start check took it, or one whose lock was freed by ``selfheal unlock``). Otherwise this run
  takes it or already holds it, and counts as having acted.

``retry_after_s`` is set when waiting may help: ``kill_switch`` with ``paused_behavior=wait``, and
``target_busy``, until ``pause_wait_max_s`` has passed since this run's first refusal in a row by
the same rule; then it is None, and the caller stops waiting. The workflow therefore needs one
rule: ``retry_after_s`` set → sleep that long and ask again; None → stop. A dry run evaluates
every rule but only reads (no lock, not counted as acting) and never asks to wait: it shows what
would be refused. Every decision is recorded in ``guardrail_decisions``.

``release_target`` ends the healing's hold: frees its target lock and, for a healing that acted,
starts the target's cooldown. It is idempotent and must run at the end of every healing, whatever
its outcome. A healing that never reaches it (a terminated workflow) leaves its lock behind:
``selfheal unlock SERVICE/TARGET`` frees it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from kubernetes.client import ApiClient
from pydantic_core import PydanticUndefined
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.actions.kubernetes import (
    WORKLOADS,
    KubeApi,
    _apps,
    _core,
    desired_pods,
    workload_of_pod,
)
from selfheal.activities.actions.registry import Action, ActionRegistry
from selfheal.activities.errors import as_application_error
from selfheal.core.catalog import ServiceCatalog, ServiceSpec
from selfheal.core.probes import http_client, probe_health, read_metric
from selfheal.core.settings import GuardrailSettings
from selfheal.domain import (
    ActionNotFound,
    Fault,
    RecoveryStep,
    SelfhealError,
    TargetError,
    render_params,
)
from selfheal.domain.payloads import (
    CheckGuardrailsInput,
    GuardrailDecision,
    ReleaseTargetInput,
)
from selfheal.models.guardrails import Claim, DecisionRecord, Guardrails, Run, target_key
from selfheal.workflows.contract import CHECK_GUARDRAILS, RELEASE_TARGET, implements

log = structlog.get_logger(__name__)

KILL_SWITCH_RETRY_S = 30.0
TARGET_BUSY_RETRY_S = 15.0
MIN_RETRY_S = 0.1

UNKNOWN_SERVICE = "unknown_service"
KILL_SWITCH = "kill_switch"
COOLDOWN = "cooldown"
BUDGET = "budget"
ALLOWLIST = "allowlist"
BLAST_RADIUS = "blast_radius"
FAULT_RESOLVED = "fault_resolved"
TARGET_BUSY = "target_busy"


class _Refused(Exception):
    def __init__(self, decision: GuardrailDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def _refuse(
    rule: str, reason: str, *, retry_after_s: float | None = None, resolved: bool = False
) -> _Refused:
    return _Refused(
        GuardrailDecision(
            allowed=False,
            rule=rule,
            reason=reason,
            fault_resolved=resolved,
            retry_after_s=retry_after_s,
        )
    )


class GuardrailActivities:
    """``kubernetes``: the worker's API client (``kubernetes_client(settings.kubernetes)``), from
    which the blast radius reads workloads' replica counts; None without a cluster."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        catalog: ServiceCatalog,
        settings: GuardrailSettings,
        registry: ActionRegistry,
        http: httpx.AsyncClient | None = None,
        probe_timeout_s: float = 3.0,
        kubernetes: ApiClient | None = None,
    ) -> None:
        self._store = Guardrails(session_factory)
        self._catalog = catalog
        self._settings = settings
        self._registry = registry
        self._http = http
        self._probe_timeout_s = probe_timeout_s
        self._kube = KubeApi(kubernetes) if kubernetes is not None else None

    @implements(CHECK_GUARDRAILS)
    async def check_guardrails(self, input: CheckGuardrailsInput) -> GuardrailDecision:
        spec = self._catalog.get(input.fault.service)
        target = _target_name(spec, input.fault)
        key = target_key(input.fault.service, target)
        try:
            try:
                if input.step is None:
                    decision = await self._at_start(input, spec, key)
                else:
                    decision = await self._before_step(input, input.step, spec, key)
            except _Refused as refused:
                decision = refused.decision
            await asyncio.to_thread(self._store.record_decision, _record(input, key, decision))
        except SelfhealError as exc:
            raise as_application_error(exc) from None
        if not decision.allowed:
            log.info("guardrail refused", rule=decision.rule, reason=decision.reason, target=key)
        return decision

    @implements(RELEASE_TARGET)
    async def release_target(self, input: ReleaseTargetInput) -> None:
        try:
            await asyncio.to_thread(self._store.release, Run(input.workflow_id, input.run_id))
        except SelfhealError as exc:
            raise as_application_error(exc) from None

    async def _at_start(
        self, input: CheckGuardrailsInput, spec: ServiceSpec | None, key: str
    ) -> GuardrailDecision:
        spec = _known(spec, input.fault)
        await self._kill_switch(input)
        run = Run(input.workflow_id, input.run_id)
        now = datetime.now(UTC)
        if spec.cooldown_s > 0:
            since = now - timedelta(seconds=spec.cooldown_s)
            recent = await asyncio.to_thread(self._store.last_end, key, run, since)
            if recent is not None:
                ago = (now - recent.ended_at).total_seconds()
                raise _refuse(
                    COOLDOWN,
                    f"{key} was healed by {recent.workflow_id}, which ended {ago:.0f}s ago; "
                    f"within the {spec.cooldown_s:g}s cooldown a new fault is recorded and "
                    "escalated, not auto-healed",
                )
        acted = await asyncio.to_thread(self._store.acted_count, spec.name, run, now)
        if acted >= spec.budget_per_hour:
            raise _refuse(BUDGET, _budget_reason(spec, acted))
        held = await asyncio.to_thread(self._store.hold, key, run, now, dry_run=input.dry_run)
        if held.status == "busy":
            raise await self._busy(input, key, held)
        if input.dry_run:
            return GuardrailDecision(allowed=True, reason="may start (a dry run holds nothing)")
        return GuardrailDecision(allowed=True, reason=f"may start; holds {key} until it ends")

    async def _before_step(
        self, input: CheckGuardrailsInput, step: RecoveryStep, spec: ServiceSpec | None, key: str
    ) -> GuardrailDecision:
        action = self._action(step)
        if not action.mutating:
            return GuardrailDecision(allowed=True, reason="read-only step: no guardrail applies")
        spec = _known(spec, input.fault)
        await self._kill_switch(input)
        params = _rendered(step, input.fault)
        _check_allowlists(spec, action, params, input.fault)
        count = None
        if _needs_replicas(spec, action, params):
            count = await self._replica_count(spec, action, params, input.fault)
        notes = _check_blast_radius(spec, action, params, count)
        await self._recheck_fault(input.symptom or input.fault)
        await self._claim(input, spec, key)
        return GuardrailDecision(allowed=True, reason="; ".join(["may act", *notes]))

    async def _replica_count(
        self, spec: ServiceSpec, action: Action[Any], params: dict[str, Any], fault: Fault
    ) -> ReplicaCount:
        """The workload's replica count from the API; the fault's values when there is no API,
        no workload to read, or the read fails (the source says which, and why)."""
        if self._kube is None:
            return _fault_replicas(fault, "no Kubernetes API configured")
        workload = _workload_of_step(spec, action, params, fault)
        if workload is None:
            return _fault_replicas(fault, "the step names no Kubernetes workload")
        kind, namespace, name = workload
        try:
            if kind == "Pod":
                pod = await self._kube.get(_core(namespace, "pods", name))
                found = await workload_of_pod(self._kube, namespace, pod)
                if found is None:
                    return _fault_replicas(fault, f"pod {name!r} belongs to no workload")
                key, obj = found
                kind, name = key.split("/", 1)
            else:
                obj = await self._kube.get(_apps(namespace, WORKLOADS[kind], name))
        except TargetError as exc:
            return _fault_replicas(fault, f"reading {kind} {name!r} failed: {exc}")
        where = f"{kind} {name!r} in namespace {namespace!r}, read from the API"
        return ReplicaCount(desired_pods(kind, obj), where)

    async def _kill_switch(self, input: CheckGuardrailsInput) -> None:
        state = await asyncio.to_thread(self._store.state)
        if not state.paused:
            return
        since = f" since {state.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if state.at else ""
        why = f": {state.reason}" if state.reason else ""
        paused = f"selfheal is paused by {state.by or 'unknown'}{since}{why}"
        if self._settings.paused_behavior != "wait":
            raise _refuse(KILL_SWITCH, f"{paused}; no mutating step runs until selfheal resume")
        retry_after_s, then = await self._wait(input, KILL_SWITCH, KILL_SWITCH_RETRY_S, "resume")
        raise _refuse(KILL_SWITCH, f"{paused}; {then}", retry_after_s=retry_after_s)

    async def _wait(
        self, input: CheckGuardrailsInput, rule: str, retry_after_s: float, until: str
    ) -> tuple[float | None, str]:
        """Whether to wait again, and what to say: waiting is bounded by ``pause_wait_max_s``
        from this run's first refusal in a row by ``rule``; a dry run never waits."""
        limit = self._settings.pause_wait_max_s
        if input.dry_run:
            return None, f"a healing would wait up to {limit:g}s for {until}"
        run = Run(input.workflow_id, input.run_id)
        first = await asyncio.to_thread(self._store.refused_since, run, rule)
        waited = 0.0 if first is None else (datetime.now(UTC) - first).total_seconds()
        if waited >= limit:
            return None, f"waited {waited:.0f}s for {until} (pause_wait_max_s {limit:g}): giving up"
        # Never past the limit by more than a moment, so a short limit is kept.
        retry_after_s = max(min(retry_after_s, limit - waited), MIN_RETRY_S)
        return retry_after_s, f"waiting up to {limit:g}s for {until} ({waited:.0f}s so far)"

    def _action(self, step: RecoveryStep) -> Action[Any]:
        try:
            return self._registry.get(step.action)
        except ActionNotFound as exc:
            raise _refuse(ALLOWLIST, str(exc)) from None

    async def _recheck_fault(self, fault: Fault) -> None:
        if not self._settings.recheck_fault or (not fault.health_url and fault.metric is None):
            return
        if _hung_moments_ago(fault, self._settings.recheck_fresh_s):
            return  # a probe would only wait out its timeout again: it is still hung
        seen: list[str] = []
        async with http_client(self._http) as http:
            if fault.health_url:
                probe = await probe_health(http, fault.health_url, self._probe_timeout_s)
                if not probe.ok:
                    return
                seen.append(f"{probe.url} answers {probe.detail}")
            if fault.metric is not None:
                reading = await read_metric(http, fault.metric, self._probe_timeout_s)
                # An unreadable metric proves nothing: the fault may still fire.
                if reading.value is None or reading.value > fault.metric.max:
                    return
                seen.append(f"{fault.metric.name} = {reading.value:g} <= {fault.metric.max:g}")
        raise _refuse(
            FAULT_RESOLVED, "the fault no longer fires: " + ", ".join(seen), resolved=True
        )

    async def _claim(self, input: CheckGuardrailsInput, spec: ServiceSpec, key: str) -> None:
        claim = await asyncio.to_thread(
            self._store.claim,
            spec.name,
            key,
            Run(input.workflow_id, input.run_id),
            spec.budget_per_hour,
            datetime.now(UTC),
            dry_run=input.dry_run,
        )
        if claim.status == "budget":
            raise _refuse(BUDGET, _budget_reason(spec, claim.acted_last_hour))
        if claim.status == "busy":
            raise await self._busy(input, key, claim)

    async def _busy(self, input: CheckGuardrailsInput, key: str, claim: Claim) -> _Refused:
        """``target_busy``: who holds the target since when, and whether to wait for it."""
        since = f" since {claim.held_since.astimezone(UTC):%H:%M:%S}Z" if claim.held_since else ""
        retry_after_s, then = await self._wait(
            input, TARGET_BUSY, TARGET_BUSY_RETRY_S, "the target"
        )
        return _refuse(
            TARGET_BUSY,
            f"{key} is being healed by {claim.holder}{since}; one healing at a time holds a "
            f"target, from its start until it ends; {then}",
            retry_after_s=retry_after_s,
        )


def _target_name(spec: ServiceSpec | None, fault: Fault) -> str | None:
    if spec is None:
        return fault.target
    target = spec.target(fault.target)
    return target.name if target is not None else fault.target


def _known(spec: ServiceSpec | None, fault: Fault) -> ServiceSpec:
    if spec is None:
        raise _refuse(
            UNKNOWN_SERVICE,
            f"service {fault.service!r} is not in the service catalog (services.yaml); "
            "selfheal acts only on declared services",
        )
    return spec


def _budget_reason(spec: ServiceSpec, acted: int) -> str:
    return (
        f"{acted} healings of {spec.name} acted within the last hour; its budget is "
        f"{spec.budget_per_hour} per hour"
    )


def _rendered(step: RecoveryStep, fault: Fault) -> dict[str, Any]:
    try:
        return render_params(step.params, fault)
    except KeyError as exc:
        raise _refuse(
            ALLOWLIST, f"step {step.label!r}: params name {exc.args[0]}, which the fault lacks"
        ) from None


def _param(action: Action[Any], params: dict[str, Any], name: str) -> Any:
    """The step's param, else the default of the action's params model (None if neither)."""
    if name in params:
        return params[name]
    field = action.params_model.model_fields.get(name)
    if field is None or field.default is PydanticUndefined:
        return None
    return field.default


def _check_allowlists(
    spec: ServiceSpec, action: Action[Any], params: dict[str, Any], fault: Fault
) -> None:
    if not spec.allows_action(action.name):
        raise _refuse(
            ALLOWLIST,
            f"action {action.name} is not allowed for {spec.name} "
            f"(allowed_actions: {', '.join(spec.allowed_actions) or 'none'})",
        )
    target = spec.target(fault.target)
    if target is None:
        declared = ", ".join(t.name for t in spec.targets) or "none"
        raise _refuse(
            ALLOWLIST,
            f"target {fault.target or '(default)'!r} is not a target of {spec.name} "
            f"(declared: {declared})",
        )
    namespace = _param(action, params, "namespace") or target.namespace
    if namespace is not None and not spec.allows_namespace(str(namespace)):
        raise _refuse(
            ALLOWLIST,
            f"namespace {namespace!r} is not allowed for {spec.name} "
            f"(allowed_namespaces: {', '.join(spec.allowed_namespaces)})",
        )


@dataclass(frozen=True)
class ReplicaCount:
    """A workload's replica count (None: unknown) and where it came from, for the reason."""

    value: int | None
    source: str


def _needs_replicas(spec: ServiceSpec, action: Action[Any], params: dict[str, Any]) -> bool:
    """Whether the blast radius of this step depends on the workload's replica count."""
    if _int_param(action, params, "replicas") is not None:
        return True
    return spec.max_percent_per_step is not None and (
        _int_param(action, params, "max_pods") is not None
    )


def _workload_of_step(
    spec: ServiceSpec, action: Action[Any], params: dict[str, Any], fault: Fault
) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of what the step acts on: the Deployment a scale names, the pod
    a delete_pod names (its workload is looked up), else the fault's target when it is a
    Deployment or StatefulSet."""
    target = spec.target(fault.target)
    namespace = str(
        _param(action, params, "namespace") or (target and target.namespace) or "default"
    )
    name = params.get("name")
    if action.name == "kubernetes.scale" and isinstance(name, str):
        return "Deployment", namespace, name
    if action.name == "kubernetes.delete_pod" and isinstance(name, str):
        return "Pod", namespace, name
    if target is not None and target.kind in ("deployment", "statefulset"):
        kind = "Deployment" if target.kind == "deployment" else "StatefulSet"
        return kind, namespace, target.name
    return None


def _fault_replicas(fault: Fault, why: str) -> ReplicaCount:
    """Today's fallback: the count the fault carries in ``values["replicas"]``."""
    value = fault.values.get("replicas")
    if value is None or not math.isfinite(value):
        return ReplicaCount(None, f"{why}, and the fault does not carry values.replicas")
    return ReplicaCount(int(value), f"the fault's values.replicas; {why}")


def _check_blast_radius(
    spec: ServiceSpec, action: Action[Any], params: dict[str, Any], count: ReplicaCount | None
) -> list[str]:
    """Refuse a step above the limit; notes for the decision: where the replica count came
    from, or that something went unchecked."""
    current = count.value if count is not None else None
    limit = spec.max_pods_per_step
    if spec.max_percent_per_step is not None and current is not None:
        limit = max(limit, math.floor(current * spec.max_percent_per_step / 100))
    limit_text = _limit_text(spec, count, limit)
    pods = _int_param(action, params, "max_pods")
    if pods is not None and pods > limit:
        raise _refuse(
            BLAST_RADIUS, f"{action.name} may touch {pods} pods in one step; {limit_text}"
        )
    notes = [] if count is None or current is None else [f"{current} replicas ({count.source})"]
    replicas = _int_param(action, params, "replicas")
    if replicas is None:
        return notes
    if current is None:
        source = count.source if count is not None else "no replica count"
        return [f"replica change unchecked: {source}"]
    change = abs(replicas - current)
    if change > limit:
        raise _refuse(
            BLAST_RADIUS,
            f"{action.name} from {current} to {replicas} replicas changes {change} pods in one "
            f"step; {limit_text}",
        )
    return notes


def _int_param(action: Action[Any], params: dict[str, Any], name: str) -> int | None:
    value = _param(action, params, name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise _refuse(
            BLAST_RADIUS, f"{action.name} param {name}={value!r} is not a number of pods"
        ) from None


def _limit_text(spec: ServiceSpec, count: ReplicaCount | None, limit: int) -> str:
    text = f"{spec.name} allows {limit} per step (max_pods_per_step {spec.max_pods_per_step}"
    if spec.max_percent_per_step is not None:
        if count is not None and count.value is not None:
            of = f" of {count.value} replicas ({count.source})"
        else:
            of = f", replica count unknown ({count.source if count else 'not read'})"
        text += f", max_percent_per_step {spec.max_percent_per_step:g}%{of}"
    return text + ")"


def _record(input: CheckGuardrailsInput, key: str, decision: GuardrailDecision) -> DecisionRecord:
    return DecisionRecord(
        workflow_id=input.workflow_id,
        run_id=input.run_id,
        candidate=input.candidate,
        step_order=input.order,
        action=input.step.action if input.step is not None else None,
        target=key,
        allowed=decision.allowed,
        rule=decision.rule,
        reason=decision.reason,
        fault_resolved=decision.fault_resolved,
        dry_run=input.dry_run,
        decided_at=datetime.now(UTC),
    )


def _hung_moments_ago(fault: Fault, fresh_s: float) -> bool:
    """The watcher saw ``fault``'s target time out, less than ``fresh_s`` ago."""
    age = (datetime.now(UTC) - fault.detected_at).total_seconds()
    return (
        fault.source == "watcher"
        and fault.labels.get("probe_error") == "timeout"
        and (age < fresh_s)
    )
