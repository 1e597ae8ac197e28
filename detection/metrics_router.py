"""Metric points and heartbeats in, Faults out: the detectors applied as ``detectors.yaml`` says.

Pure logic, no I/O: the intake feeds it and starts or signals the healings. A fault's fingerprint
is its service, type and target, so every anomalous point of one ongoing problem names the same
healing; repeats are the intake's to count, never a second healing.

Labels come from the outside (OTLP attributes) and are cut to what a Fault holds (``fit_labels``:
long values clipped, ending in '…'). A service or target taken from a label and longer than a
Fault's bound is clipped the same way: no catalog name ends in '…', so the door refuses that
fault with its reason (``unknown service '…'``), logged and counted as refused by the intake,
never an error of the exporter's request.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from selfheal.detection.detector_config import DetectorConfig, MetricRule
from selfheal.detection.detectors import DETECTORS, Detector, PhiAccrual, SeriesBank
from selfheal.domain import Fault
from selfheal.domain.fault import (
    LABEL_VALUE_MAX,
    LABELS_MAX,
    SERVICE_MAX,
    SUMMARY_MAX,
    TARGET_MAX,
    TYPE_MAX,
    clip,
    fit_labels,
)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _RuleState:
    rule: MetricRule
    series: SeriesBank[SeriesKey, Detector]


def _factory(rule: MetricRule) -> Callable[[], Detector]:
    kind = DETECTORS[rule.detector]
    params = rule.detector_params()
    return lambda: kind.make(params)


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _fault(
    *, service: str, fault_type: str, target: str | None, summary: str, **fields: object
) -> Fault:
    """A detector's Fault, its strings cut to the Fault's bounds (see the module's docstring)."""
    return Fault.model_validate(
        {
            "service": clip(service, SERVICE_MAX),
            "type": clip(fault_type, TYPE_MAX),
            "target": None if target is None else clip(target, TARGET_MAX),
            "summary": clip(summary, SUMMARY_MAX),
            **fields,
        }
    )


class MetricsRouter:
    def __init__(self, config: DetectorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._by_metric: dict[str, list[_RuleState]] = defaultdict(list)
        for rule in config.metrics:
            bank: SeriesBank[SeriesKey, Detector] = SeriesBank(_factory(rule), config.max_series)
            self._by_metric[rule.metric].append(_RuleState(rule, bank))
        heartbeat_params = config.heartbeats.params
        self.heartbeats: SeriesBank[str, PhiAccrual] = SeriesBank(
            lambda: PhiAccrual(heartbeat_params), config.max_series
        )

    def observe(
        self, name: str, labels: Mapping[str, str], timestamp: float, value: float
    ) -> list[Fault]:
        """Score the point with every rule for its metric; a Fault per rule that finds it
        anomalous. Non-finite values are skipped: they would poison a series' statistics."""
        states = self._by_metric.get(name)
        if not states or not (math.isfinite(value) and math.isfinite(timestamp)):
            return []
        plain = dict(labels)
        key: SeriesKey = (name, tuple(sorted(plain.items())))
        faults = []
        for state in states:
            rule = state.rule
            if not rule.matches(plain):
                continue
            score = state.series.get(key).update(timestamp, value)
            if score < rule.threshold:
                continue
            service = rule.fault.service_for(plain)
            if service is None:
                continue
            own = {"metric": name, "detector_rule": rule.name}
            labels = fit_labels(plain, room=LABELS_MAX - len(own))
            labels.update({k: clip(v, LABEL_VALUE_MAX) for k, v in own.items()})
            faults.append(
                _fault(
                    service=service,
                    fault_type=rule.fault.type,
                    target=rule.fault.target_for(plain),
                    severity=rule.fault.severity,
                    summary=f"{name} = {value:g} is anomalous ({rule.detector} score "
                    f"{score:.2f} ≥ {rule.threshold:g}, rule {rule.name})",
                    labels=labels,
                    values={"value": value, "anomaly_score": score},
                    source="otlp",
                    detected_at=_at(timestamp),
                )
            )
        return faults

    def heartbeat(self, component: str, timestamp: float | None = None) -> bool:
        """Record a heartbeat; False when no ``heartbeats.components`` entry watches it."""
        if self.config.heartbeats.component(component) is None:
            return False
        self.heartbeats.get(component).update(self._now(timestamp))
        return True

    def check_heartbeats(self, now: float | None = None) -> list[Fault]:
        """A Fault for every watched component whose phi is at or over the threshold now.

        Reported at every check while the silence lasts, so a report lost on its way to Temporal
        is sent again; the fingerprint folds them into one healing.
        """
        at = self._now(now)
        config = self.config.heartbeats
        faults = []
        for component, detector in self.heartbeats.items():
            suspicion = detector.phi(at)
            entry = config.component(component)
            if entry is None or suspicion < config.params.threshold:
                continue
            faults.append(
                _fault(
                    service=entry.service,
                    fault_type=config.fault.type,
                    target=entry.target or component,
                    severity=config.fault.severity,
                    summary=f"no heartbeat from {component}: phi {suspicion:.1f} ≥ "
                    f"{config.params.threshold:g}",
                    labels=fit_labels({"component": component}),
                    values={"phi": min(suspicion, 1e300)},
                    source="heartbeat",
                    detected_at=_at(at),
                )
            )
        return faults

    def _now(self, given: float | None) -> float:
        return self._clock() if given is None else given
