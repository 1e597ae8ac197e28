"""The service catalog (``runbooks/services.yaml``): which services exist, what they depend on,
and what selfheal may act on for each. Labels of an alert never choose a target: a fault
resolves its target through this catalog, and guardrails read their limits from it."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
