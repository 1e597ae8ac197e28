"""The service catalog (``runbooks/services.yaml``): which services exist, what they depend on,
what selfheal may act on for each, and the one resolution of a fault through it.

Labels never choose a target. ``resolve_fault`` accepts a fault only for a service of the
catalog and a target that service declares (or its default target), then takes everything that
says *where* to act from the catalog: the target's ``health_url`` and ``metric``, and the labels
in ``CATALOG_LABELS`` plus the target's own ``labels``, which are overwritten (or removed when
the target declares none) so that an alert carrying ``base_url: http://elsewhere`` or a
``cache_prefix`` never steers an action. Guardrails read their limits from the same catalog.

Kubernetes objects named by labels. An alert of kube-prometheus carries no ``service``: it names
the object (``namespace``, ``deployment``, ``statefulset``, ``pod``, ``container``, ``node``).
``resolve_workload`` finds the one catalog target those labels describe — a deployment or
statefulset target by its name in its (declared) namespace, a pod by its workload's name
(``<deployment>-<hash>-<5>``, ``<statefulset>-<ordinal>``), a node target by its name — and
refuses with the reason when none or several match: the labels choose among the catalog's
targets, never an object of their own. ``resolve_fault`` then keeps the labels that describe the
resolved target only: ``pod`` (and its ``container``) when the pod is one of the workload's,
``node`` set to the node target's name, and neither on any other Kubernetes target, so that a
plan's ``${fault.labels.pod}`` or ``${fault.labels.node}`` can only name an object of its target.

Fingerprints: a fingerprint derived from service, type and target is derived again from the
resolved target. An explicit upstream fingerprint (Alertmanager's) is kept readable but scoped to
the resolved target, ``<upstream>-<target>``, so two targets never share a healing; a target name
that is not fingerprint-safe or long becomes ``t<sha256[:12]>``. Resolving twice changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfheal.core.yaml_source import Problem, load_yaml
from selfheal.domain import Fault, IntakeError, MetricCheck
from selfheal.domain.criteria import DEFAULT_GUARDS, ApprovalSpec, GuardSpec, ValidationCriterion
from selfheal.domain.fault import clip, fingerprint_of
from selfheal.domain.maintenance import MaintenanceWindow

# Names end up quoted in Temporal visibility queries and in workflow ids: keep them plain.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
# Labels that say where to act: only the catalog sets them, whatever a report carries.
CATALOG_LABELS = ("base_url", "namespace")
# The Redis key prefix of a cache, which a plan may delete: set by a target's ``labels`` only
# (``selfheal dev`` declares its demo cache there), dropped from every report.
CACHE_PREFIX_LABEL = "cache_prefix"
# The replica count a saturated workload may be scaled out to (``kubernetes.scale``): set by a
# target's ``labels`` only, dropped from every report (a sender never chooses a count).
SCALE_TO_LABEL = "scale_to"
INTERNAL_LABELS = frozenset({CACHE_PREFIX_LABEL, SCALE_TO_LABEL})
# Labels of an alert that name a Kubernetes object (kube-state-metrics' own names), in the order
# ``resolve_workload`` reads them.
WORKLOAD_LABELS = ("deployment", "statefulset", "pod", "node")
WORKLOAD_KINDS = frozenset({"deployment", "statefulset", "pod"})
KUBERNETES_KINDS = WORKLOAD_KINDS | {"node"}
# Generated names (k8s.io/apimachinery util/rand and the apiserver's name generator): a
# ReplicaSet is ``<deployment>-<hash>``, its pods ``<replicaset>-<5 random>``; a base longer
# than 58 characters is cut to 58 before the random suffix.
_RANDOM = "[bcdfghjklmnpqrstvwxz2456789]"
_GENERATED_BASE_MAX = 58
_ORDINAL = "(?:0|[1-9][0-9]*)"

_SAFE_SUFFIX = re.compile(r"^[A-Za-z0-9._:-]{1,40}$")
_FINGERPRINT_MAX = 128

TargetKind = Literal[
    "process", "deployment", "statefulset", "pod", "node", "service", "configmap", "redis",
    "postgres", "http",
]  # fmt: skip


class TargetSpec(BaseModel):
    """Something selfheal may act on."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: TargetKind
    namespace: str | None = None
    health_url: str | None = None
    base_url: str | None = Field(default=None, description="control endpoint of the target")
    metric: MetricCheck | None = Field(
        default=None, description="a metric that must stay within bounds (watched and validated)"
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels set on every fault of this target, over what the report says",
    )


ProviderName = Literal["probe", "metrics", "alerts", "traces", "kubernetes", "history"]
PROVIDER_NAMES: tuple[ProviderName, ...] = (
    "probe", "metrics", "alerts", "traces", "kubernetes", "history",
)  # fmt: skip


class MetricsEvidence(BaseModel):
    """PromQL templates, by name. ``${service}``, ``${namespace}``, ``${target}`` are
    substituted with label-escaped values. Common names the shipped rules read:
    ``error_ratio``, ``latency_p99``, ``saturation``, ``restarts``, ``requests``; a name ending
    in ``_timestamp`` (e.g. ``last_change_timestamp``) also gives ``age_s`` at the fault."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, str] = Field(default_factory=dict)


class KubernetesEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(default=None, description="unset: the target's namespace")
    selector: str | None = Field(
        default=None, description="pod label selector; unset: the workload's own selector"
    )


class EvidenceSpec(BaseModel):
    """Which providers run for a service, and their queries."""

    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderName] = Field(default_factory=lambda: list(PROVIDER_NAMES))
    metrics: MetricsEvidence = Field(default_factory=MetricsEvidence)
    kubernetes: KubernetesEvidence = Field(default_factory=KubernetesEvidence)


class ServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    targets: list[TargetSpec] = Field(default_factory=list)
    default_target: str | None = Field(
        default=None, description="the target of a fault that names none (first target if unset)"
    )
    allowed_actions: list[str] = Field(
        default_factory=lambda: ["*"], description="fnmatch patterns of action names"
    )
    allowed_namespaces: list[str] = Field(default_factory=list, description="empty: any")
    budget_per_hour: int = Field(default=3, ge=0, description="healings that may act per hour")
    cooldown_s: float = Field(default=600.0, ge=0, description="after a healing of a target ends")
    max_pods_per_step: int = Field(default=1, ge=0, description="blast radius in pods")
    max_percent_per_step: float | None = Field(
        default=None, ge=0, le=100, description="blast radius in % of a workload's replicas"
    )
    evidence: EvidenceSpec = Field(default_factory=EvidenceSpec)
    validation: list[ValidationCriterion] = Field(
        default_factory=list,
        description="what 'recovered' means for a solution that declares nothing; empty: the "
        "health probe and the target's metric",
    )
    guards: list[GuardSpec] | None = Field(
        default=None, description="side effects watched while acting; unset: DEFAULT_GUARDS"
    )
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    maintenance_windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="when a predicted fault's plan may run (weekly, local time); none: at once",
    )

    @property
    def watched_guards(self) -> list[GuardSpec]:
        return list(DEFAULT_GUARDS) if self.guards is None else self.guards

    def target(self, name: str | None) -> TargetSpec | None:
        """The named target, or the default one; None when the name is not in the catalog."""
        wanted = name or self.default_target or (self.targets[0].name if self.targets else None)
        return next((t for t in self.targets if t.name == wanted), None)

    def allows_action(self, action: str) -> bool:
        return any(fnmatchcase(action, pattern) for pattern in self.allowed_actions)

    def allows_namespace(self, namespace: str | None) -> bool:
        return not self.allowed_namespaces or (namespace in self.allowed_namespaces)


class ServiceCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    correlation_window_s: float = Field(default=300.0, ge=0)
    services: list[ServiceSpec] = Field(default_factory=list)

    def get(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    def dependents(self, name: str) -> list[str]:
        """The services that depend on ``name`` directly (a side effect there is ours too)."""
        return [s.name for s in self.services if name in s.depends_on and s.name != name]

    def dependencies(self, name: str) -> list[str]:
        """Every service ``name`` depends on, directly or not, nearest first."""
        seen: list[str] = []
        root = self.get(name)
        frontier = list(root.depends_on) if root is not None else []
        while frontier:
            current = frontier.pop(0)
            if current in seen or current == name:
                continue
            seen.append(current)
            spec = self.get(current)
            if spec is not None:
                frontier.extend(spec.depends_on)
        return seen


# ----------------------------------------------------------------------------------- loading


def load_services(path: Path) -> ServiceCatalog:
    """Read and check a service catalog. Errors name the file, line and field: ``ConfigError``.

    Beyond the model: service and target names are plain and unique, ``default_target`` names a
    target of its service, ``depends_on`` names services of the catalog, and no service depends
    on itself, directly or not.
    """
    return load_yaml(
        path,
        ServiceCatalog,
        what="service catalog",
        checks=[catalog_problems],
        expected="a mapping with a 'services' list",
    )


def catalog_problems(catalog: ServiceCatalog) -> Iterator[Problem]:
    """The first problem of ``catalog`` beyond its model (one: later ones often follow from it)."""
    known = [service.name for service in catalog.services]
    seen: set[str] = set()
    for index, service in enumerate(catalog.services):
        at = ("services", index)
        if not NAME.match(service.name):
            yield Problem((*at, "name"), f"expected {NAME_RULE}; got {service.name!r}")
            return
        if service.name in seen:
            yield Problem((*at, "name"), f"service {service.name!r} is declared twice")
            return
        seen.add(service.name)
        targets: set[str] = set()
        for t_index, target in enumerate(service.targets):
            if target.name in targets:
                yield Problem(
                    (*at, "targets", t_index, "name"), f"target {target.name!r} appears twice"
                )
                return
            targets.add(target.name)
        if service.default_target is not None and service.default_target not in targets:
            yield Problem(
                (*at, "default_target"),
                f"{service.default_target!r} is not a target of {service.name!r} "
                f"(targets: {_names(sorted(targets))})",
            )
            return
        for d_index, dependency in enumerate(service.depends_on):
            if dependency not in known:
                yield Problem(
                    (*at, "depends_on", d_index),
                    f"unknown service {dependency!r} (known: {_names(known)})",
                )
                return
    for index, service in enumerate(catalog.services):
        cycle = _cycle_from(catalog, service.name)
        if cycle is not None:
            yield Problem(
                ("services", index, "depends_on"), "dependency cycle: " + " -> ".join(cycle)
            )
            return


def _cycle_from(catalog: ServiceCatalog, start: str) -> list[str] | None:
    """A path start -> ... -> start through depends_on, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        name, path = stack.pop()
        spec = catalog.get(name)
        for dependency in spec.depends_on if spec is not None else []:
            if dependency == start:
                return [*path, start]
            if dependency not in visited:
                visited.add(dependency)
                stack.append((dependency, [*path, dependency]))
    return None


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def query_variables(
    catalog: ServiceCatalog, service: str, fault: Fault | None = None
) -> dict[str, str]:
    """The placeholders of ``service``'s evidence queries (``${service}``, ``${target}``,
    ``${namespace}``): from the catalog, and from ``fault`` when it is that service's."""
    spec = catalog.get(service)
    target = spec.target(None) if spec is not None else None
    own = fault if fault is not None and fault.service == service else None
    return {
        "service": service,
        "target": (own.target if own else None) or (target.name if target else service),
        "namespace": (target.namespace if target else None)
        or (str(own.labels.get("namespace", "")) if own else ""),
    }


# --------------------------------------------------------------------------------- resolving


def resolve_fault(fault: Fault, catalog: ServiceCatalog) -> Fault:
    """The fault with its target, health URL, metric, catalog labels and fingerprint from the
    catalog, and without internal labels it did not get from there.

    Raises ``IntakeError`` with the reason for an unknown service, a target the service does
    not declare, or a service that declares no target at all.
    """
    service = catalog.get(fault.service)
    if service is None:
        known = _names(sorted(s.name for s in catalog.services))
        raise IntakeError(f"unknown service {fault.service!r} (known: {known})")
    target = _target_of(fault, service)
    owned = {*CATALOG_LABELS, *INTERNAL_LABELS, *target.labels}
    labels = {k: v for k, v in fault.labels.items() if k not in owned}
    for key, value in (("base_url", target.base_url), ("namespace", target.namespace)):
        if value is not None:
            labels[key] = value
    _keep_own_objects(labels, target)
    labels.update(target.labels)
    derived = fault.fingerprint == fingerprint_of(fault.service, fault.type, fault.target)
    fingerprint = (
        fingerprint_of(fault.service, fault.type, target.name)
        if derived
        else scoped_fingerprint(fault.fingerprint, target.name)
    )
    return fault.model_copy(
        update={
            "target": target.name,
            "health_url": target.health_url,
            # Validation fetches the metric's URL: only the catalog's is ever fetched.
            "metric": target.metric,
            "labels": labels,
            "fingerprint": fingerprint,
        }
    )


def _target_of(fault: Fault, service: ServiceSpec) -> TargetSpec:
    allowed = _names([t.name for t in service.targets])
    if not service.targets:
        raise IntakeError(f"service {service.name!r} declares no target selfheal may act on")
    target = service.target(fault.target)
    if target is None:
        if fault.target:
            raise IntakeError(
                f"target {fault.target!r} is not a target of service {service.name!r} "
                f"(allowed: {allowed})"
            )
        raise IntakeError(
            f"default target {service.default_target!r} of service {service.name!r} "
            f"is not one of its targets ({allowed})"
        )
    return target


def scoped_fingerprint(upstream: str, target: str) -> str:
    """``upstream`` bound to ``target``: ``<upstream>-<target>``, within 128 fingerprint-safe
    characters. Idempotent: a fingerprint already scoped to ``target`` is returned as is."""
    suffix = target if _SAFE_SUFFIX.match(target) else "t" + _sha(target)[:12]
    if upstream.endswith(f"-{suffix}"):
        return upstream
    if len(upstream) + 1 + len(suffix) > _FINGERPRINT_MAX:
        upstream = f"{upstream[:70]}{_sha(upstream)[:16]}"
    return f"{upstream}-{suffix}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _keep_own_objects(labels: dict[str, str], target: TargetSpec) -> None:
    """On a Kubernetes target, drop the object labels that describe something else: a ``pod``
    that is not one of the workload's (kube-state-metrics' own pod, on a deployment's alert)
    with its ``container``, and any ``node``; a node target's ``node`` is its name."""
    if target.kind not in KUBERNETES_KINDS:
        return
    pod = labels.get("pod")
    if pod is not None and (target.kind == "node" or not is_pod_of(pod, target)):
        labels.pop("pod", None)
        labels.pop("container", None)
    labels.pop("node", None)
    if target.kind == "node":
        labels["node"] = target.name


# ------------------------------------------------------------------------ Kubernetes labels


class WorkloadMatch(BaseModel):
    """The catalog target an alert's Kubernetes labels name, and the label that named it."""

    service: str
    target: str
    label: str = Field(description="deployment, statefulset, pod or node")


def is_pod_of(pod: str, target: TargetSpec) -> bool:
    """Whether a pod named ``pod`` belongs to ``target`` by its name: a Deployment's pods are
    ``<name>-<replicaset hash>-<5 random>`` (the base cut to 58 characters for long names), a
    StatefulSet's ``<name>-<ordinal>``, a pod target is its own name. The namespace is not
    checked here."""
    if target.kind == "pod":
        return pod == target.name
    if target.kind == "statefulset":
        return re.fullmatch(f"{re.escape(target.name)}-{_ORDINAL}", pod) is not None
    if target.kind != "deployment":
        return False
    if re.fullmatch(f"{re.escape(target.name)}-{_RANDOM}{{1,10}}-{_RANDOM}{{5}}", pod):
        return True
    # A long base was cut to 58 characters: what is left of ``<name>-<hash>-``, then 5 random.
    if len(pod) != _GENERATED_BASE_MAX + 5 or not re.fullmatch(f"{_RANDOM}{{5}}", pod[-5:]):
        return False
    base, full = pod[:_GENERATED_BASE_MAX], f"{target.name}-"
    if len(full) >= _GENERATED_BASE_MAX:
        return base == full[:_GENERATED_BASE_MAX]
    rest = base.removeprefix(full)
    return rest != base and re.fullmatch(f"{_RANDOM}{{1,10}}", rest) is not None


def _names_target(target: TargetSpec, label: str, value: str, namespace: str | None) -> bool:
    if label == "node":
        return target.kind == "node" and value == target.name
    # A workload is matched in the namespace the catalog declares for it, never in another.
    if target.namespace is None or target.namespace != namespace:
        return False
    if label == "pod":
        return target.kind in WORKLOAD_KINDS and is_pod_of(value, target)
    return target.kind == label and value == target.name


def resolve_workload(
    labels: Mapping[str, str], catalog: ServiceCatalog, *, within: str | None = None
) -> WorkloadMatch:
    """The one catalog target an alert's Kubernetes labels name (of service ``within`` only,
    when given). Raises ``IntakeError`` with the reason when none or several match.

    A ``deployment`` or ``statefulset`` label names the alert's object whenever there is one:
    a ``pod`` beside it is the exporter's (kube-state-metrics' scrape labels), not the
    workload's, and is not read. Otherwise ``pod`` (a pod of a deployment, statefulset or pod
    target) and ``node`` (a node target) both count, and must agree. Workload targets are
    matched only in the namespace they declare, against the alert's ``namespace``."""
    namespace = labels.get("namespace") or None
    named = [(k, labels[k]) for k in ("deployment", "statefulset") if labels.get(k)]
    if not named:
        named = [(k, labels[k]) for k in ("pod", "node") if labels.get(k)]
    if not named:
        raise IntakeError(
            "the alert names no Kubernetes object (labels " + ", ".join(WORKLOAD_LABELS) + ")"
        )
    scope = catalog.services
    if within is not None:
        spec = catalog.get(within)
        scope = [spec] if spec is not None else []
    found: dict[tuple[str, str], str] = {}
    for label, value in named:
        for service in scope:
            for target in service.targets:
                if _names_target(target, label, value, namespace):
                    found.setdefault((service.name, target.name), label)
    what = " or ".join(_described(label, value, namespace) for label, value in named)
    where = f"service {within!r}" if within is not None else "the service catalog"
    if not found:
        raise IntakeError(
            f"no target of {where} matches {what}: a deployment or statefulset target in its "
            "declared namespace, a pod of one, or a node target"
        )
    if len(found) > 1:
        matches = ", ".join(f"{s}/{t}" for s, t in found)
        raise IntakeError(
            f"{what} matches several targets of {where} ({matches}): a service label chooses"
        )
    [((service_name, target_name), label)] = found.items()
    return WorkloadMatch(service=service_name, target=target_name, label=label)


def _described(label: str, value: str, namespace: str | None) -> str:
    text = f"{label} {clip(value, 80)!r}"
    if label == "node":
        return text
    return text + (
        f" in namespace {clip(namespace, 80)!r}" if namespace else " (no namespace label)"
    )
