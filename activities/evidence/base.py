"""The evidence provider interface, the registry, and the soft, bounded fan-out.

A provider is registered by name (``probe``, ``metrics``, ``alerts``, ``traces``, ``kubernetes``,
``history``). ``services.yaml`` says which run for a service (``evidence.providers``, all by
default). Each answers an ``EvidenceRequest`` with ``Gathered``: flat facts for the rules and
findings for the hypotheses. A provider that raises, or does not answer within its timeout, is
recorded as ``MissingEvidence`` with the reason: it lowers the confidence, it never fails the
healing.

Fact names are namespaced by provider (``metrics.*``, ``alerts.*``, ``traces.*``, ``k8s.*``,
``history.*``; the probe keeps its historical ``probe_*`` and ``body.*`` names), documented in
``runbooks/README.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog

from selfheal.core.catalog import ServiceCatalog, ServiceSpec
from selfheal.diagnosis.rules import Facts
from selfheal.domain import Fault, Finding, MissingEvidence

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EvidenceRequest:
    fault: Fault
    at: datetime
    """the fault's time: its ``detected_at``"""
    window_before_s: float
    window_after_s: float
    service: ServiceSpec | None
    """the faulted service's catalog entry (None: not in the catalog)"""
    catalog: ServiceCatalog
    detected: Facts = field(default_factory=dict)
    """what the detector already saw (the watcher's failed probes, a detector's values)"""

    @property
    def dependencies(self) -> list[str]:
        """Every service the faulted one depends on, nearest first."""
        return self.catalog.dependencies(self.fault.service)


@dataclass
class Gathered:
    facts: Facts = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


class EvidenceProvider(Protocol):
    name: str

    async def gather(self, request: EvidenceRequest) -> Gathered: ...


@dataclass
class Collected:
    facts: Facts = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    missing: list[MissingEvidence] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


class EvidenceProviders:
    """The providers a worker has, by name."""

    def __init__(self, providers: Sequence[EvidenceProvider], *, timeout_s: float = 10.0):
        self._by_name: dict[str, EvidenceProvider] = {}
        for provider in providers:
            if provider.name in self._by_name:
                raise ValueError(f"evidence provider {provider.name!r} registered twice")
            self._by_name[provider.name] = provider
        self._timeout_s = timeout_s

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> EvidenceProvider | None:
        return self._by_name.get(name)

    async def collect(self, request: EvidenceRequest, wanted: Sequence[str]) -> Collected:
        """Run the wanted providers concurrently; each bounded by the timeout, each soft."""
        collected = Collected()
        chosen: list[EvidenceProvider] = []
        for name in wanted:
            # A source this worker has no client for (no Prometheus URL, no cluster) was not
            # asked: it is not missing evidence, and does not lower the confidence.
            provider = self._by_name.get(name)
            if provider is not None:
                chosen.append(provider)
        results = await asyncio.gather(*(self._one(p, request) for p in chosen))
        for provider, result in zip(chosen, results, strict=True):
            if isinstance(result, MissingEvidence):
                collected.missing.append(result)
                continue
            collected.sources.append(provider.name)
            collected.facts.update(result.facts)
            collected.findings.extend(result.findings)
        return collected

    async def _one(
        self, provider: EvidenceProvider, request: EvidenceRequest
    ) -> Gathered | MissingEvidence:
        try:
            return await asyncio.wait_for(provider.gather(request), self._timeout_s)
        except TimeoutError:
            reason = f"no answer within {self._timeout_s:g}s"
        except Exception as exc:  # soft by design: a broken source is missing evidence
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("evidence missing", source=provider.name, reason=reason)
        return MissingEvidence(source=provider.name, reason=reason[:500])
