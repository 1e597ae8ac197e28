"""``runbooks/detectors.yaml``: which metric goes to which detector, and what fault it raises.

Loaded once at start; every problem is a ``ConfigError`` naming the file, the line and the field,
so a typo never silently turns a detector off.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from selfheal.core.yaml_source import line_of
from selfheal.detection.detectors import DETECTORS, PhiAccrualParams
from selfheal.domain import ConfigError

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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the detector config: {exc}") from None
    return parse_detector_config(text, str(path))


def parse_detector_config(text: str, source: str) -> DetectorConfig:
    """Validate YAML text; ``source`` names it in errors (``file:line: field: problem``)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping with 'metrics' and 'heartbeats'")
    duplicate = _duplicate_key(root)
    if duplicate is not None:
        line, key = duplicate
        raise ConfigError(f"{source}:{line}: {key}: the key appears twice")
    try:
        config = DetectorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(source, root, data, exc.errors())) from None
    problems: list[Any] = []
    names: set[str] = set()
    for index, rule in enumerate(config.metrics):
        if rule.name in names:
            problems.append({"loc": ("metrics", index, "name"), "msg": "the name appears twice"})
        names.add(rule.name)
        try:
            rule.detector_params()
        except ValidationError as exc:
            for error in exc.errors():
                problems.append({**error, "loc": ("metrics", index, "params", *error["loc"])})
    if problems:
        raise ConfigError(_describe(source, root, data, problems))
    return config


def _duplicate_key(node: yaml.Node | None) -> tuple[int, str] | None:
    """A key given twice would silently drop the first value: find it."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                return key.start_mark.line + 1, str(key.value)
            seen.add(key.value)
            found = _duplicate_key(value)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item)
            if found is not None:
                return found
    return None


def _describe(source: str, root: yaml.Node | None, data: dict[str, Any], errors: Any) -> str:
    errors = [item for item in errors if not _other_branch(item)]
    problems = []
    for item in errors[:5]:
        loc = [part for part in item["loc"] if not _is_union_tag(part)]
        where = f"{source}:{line_of(root, loc)}"
        subject = ""
        if len(loc) >= 2 and loc[0] == "metrics" and isinstance(loc[1], int):
            rule = data["metrics"][loc[1]]
            name = rule.get("name") if isinstance(rule, dict) else None
            subject = f"metrics[{loc[1]}]" + (f" ({name})" if name else "") + ": "
            loc = loc[2:]
        field = ".".join(str(part) for part in loc) or ("(rule)" if subject else "(file)")
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {subject}{field}: {message}")
    more = len(errors) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _other_branch(item: Any) -> bool:
    """A label matcher is a string or a {regex: ...} mapping: report only the branch that the
    value's own shape asked for."""
    loc = item["loc"]
    if "str" in loc:
        return isinstance(item.get("input"), dict)
    if "RegexMatch" in loc and len(loc) == loc.index("RegexMatch") + 1:
        return bool(item.get("type") == "model_type")
    return False


def _is_union_tag(part: object) -> bool:
    # pydantic names the union member it tried ("str", "RegexMatch"): not a field of the file.
    return part in ("str", "RegexMatch")
