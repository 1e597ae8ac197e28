"""``runbooks/detectors.yaml``: which metric goes to which detector, and what fault it raises.

Loaded once at start; every problem is a ``ConfigError`` naming the file, the line and the field,
so a typo never silently turns a detector off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from selfheal.core.yaml_source import Problem, YamlDocument, parse_yaml, read_yaml
from selfheal.detection.detectors import DETECTORS, PhiAccrualParams

Severity = Literal["info", "warning", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegexMatch(_Strict):
    regex: str = Field(description="the whole label value must match")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


LabelMatcher = str | RegexMatch


def _matches(matcher: LabelMatcher, value: str | None) -> bool:
    if value is None:
        return False
    if isinstance(matcher, str):
        return value == matcher
    return re.fullmatch(matcher.regex, value) is not None


class FaultSpec(_Strict):
    """The fault an anomaly raises. ``*_label`` take the value from the point's labels, the
    literal is the fallback when the label is missing."""

    type: str = Field(min_length=1)
    service: str | None = Field(default=None, min_length=1)
    service_label: str | None = Field(default=None, min_length=1)
    target: str | None = Field(default=None, min_length=1)
    target_label: str | None = Field(default=None, min_length=1)
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _has_service(self) -> FaultSpec:
        if self.service is None and self.service_label is None:
            raise ValueError("give 'service' (a name) or 'service_label' (a label holding it)")
        return self

    def service_for(self, labels: dict[str, str]) -> str | None:
        found = labels.get(self.service_label) if self.service_label else None
        return found or self.service

    def target_for(self, labels: dict[str, str]) -> str | None:
        found = labels.get(self.target_label) if self.target_label else None
        return found or self.target


class MetricRule(_Strict):
    name: str = Field(min_length=1)
    metric: str = Field(min_length=1, description="metric name, exactly as it arrives")
    labels: dict[str, LabelMatcher] = Field(
        default_factory=dict, description="label → exact value or {regex: ...}; all must match"
    )
    detector: str
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(default=0.5, gt=0, le=1, description="anomalous at this score")
    fault: FaultSpec
    _validated: BaseModel | None = PrivateAttr(default=None)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in DETECTORS:
            raise ValueError(f"unknown detector {value!r}; expected one of {', '.join(DETECTORS)}")
        return value

    def detector_params(self) -> BaseModel:
        """The params validated by the detector's own model (pydantic ValidationError if not)."""
        if self._validated is None:
            self._validated = DETECTORS[self.detector].params.model_validate(self.params)
        return self._validated

    def matches(self, labels: dict[str, str]) -> bool:
        return all(_matches(m, labels.get(key)) for key, m in self.labels.items())


class HeartbeatComponent(_Strict):
    match: str = Field(min_length=1, description="fnmatch pattern of component names")
    service: str = Field(min_length=1)
    target: str | None = Field(default=None, description="default: the component's name")


class HeartbeatFault(_Strict):
    type: str = Field(default="heartbeat_missed", min_length=1)
    severity: Severity = "critical"


class HeartbeatConfig(_Strict):
    params: PhiAccrualParams = Field(default_factory=PhiAccrualParams)
    fault: HeartbeatFault = Field(default_factory=HeartbeatFault)
    components: list[HeartbeatComponent] = Field(default_factory=list)

    def component(self, name: str) -> HeartbeatComponent | None:
        """The first entry whose pattern matches; None means the component is not watched."""
        return next((c for c in self.components if fnmatchcase(name, c.match)), None)


class DetectorConfig(_Strict):
    max_series: int = Field(default=10_000, ge=1, description="series kept per rule (LRU)")
    metrics: list[MetricRule] = Field(default_factory=list)
    heartbeats: HeartbeatConfig = Field(default_factory=HeartbeatConfig)


def load_detector_config(path: Path) -> DetectorConfig:
    """Read a detector config. Errors name the file, line, rule and field: ``ConfigError``."""
    return _validate(read_yaml(path, what="detector config"))


def parse_detector_config(text: str, source: str) -> DetectorConfig:
    """Validate YAML text; ``source`` names it in errors (``file:line: field: problem``)."""
    return _validate(parse_yaml(text, source))


def _validate(document: YamlDocument) -> DetectorConfig:
    return document.validate(
        DetectorConfig,
        checks=[config_problems],
        error_filter=_one_matcher_branch,
        expected="a mapping with 'metrics' and 'heartbeats'",
    )


def config_problems(config: DetectorConfig) -> Iterator[Problem]:
    """Beyond the model: rule names are unique and every rule's params fit its detector."""
    names: set[str] = set()
    for index, rule in enumerate(config.metrics):
        if rule.name in names:
            yield Problem(("metrics", index, "name"), "the name appears twice")
        names.add(rule.name)
        try:
            rule.detector_params()
        except ValidationError as exc:
            for error in exc.errors():
                yield Problem(("metrics", index, "params", *error["loc"]), error["msg"])


_MATCHER_BRANCHES = ("str", "RegexMatch")


def _one_matcher_branch(error: dict[str, Any]) -> dict[str, Any] | None:
    """A label matcher is a string or a {regex: ...} mapping: keep only the error of the branch
    that the value's own shape asked for, without the member's name that pydantic puts in
    ``loc`` (``metrics.0.labels.job.RegexMatch.regex``), which is no field of the file."""
    loc = tuple(error["loc"])
    if not (len(loc) > 4 and loc[0] == "metrics" and loc[2] == "labels"):
        return error
    branch = loc[4]
    if branch not in _MATCHER_BRANCHES:
        return error
    if branch == "str" and isinstance(error.get("input"), dict):
        return None
    if branch == "RegexMatch" and len(loc) == 5 and error.get("type") == "model_type":
        return None
    return {**error, "loc": (*loc[:4], *loc[5:])}
