from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PLACEHOLDER = re.compile(r"\$\{fault\.([A-Za-z0-9_.]+)\}")

# Bounds of a Fault's strings, checked at every door (a report over them is refused naming the
# field). ``service`` and ``type`` become Temporal search attributes (at most 2048 bytes each);
# the whole fault travels twice in a workflow's first event, well under Temporal's payload limit.
SERVICE_MAX = 128
TYPE_MAX = 128
TARGET_MAX = 253  # a Kubernetes object name
FINGERPRINT_MAX = 128
SUMMARY_MAX = 4096
SOURCE_MAX = 64
LABELS_MAX = 128
LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 1024
VALUES_MAX = 64
URL_MAX = 2048
METRIC_NAME_MAX = 512

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _now() -> datetime:
    return datetime.now(UTC)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in '…' when it was cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _http_url(value: str) -> str:
    """An absolute http:// or https:// URL with a host (kept as written)."""
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise ValueError(f"expected an http:// or https:// URL, got {clip(value, 80)!r}") from None
    return value


HttpUrlStr = Annotated[
    str,
    Field(
        max_length=URL_MAX,
        json_schema_extra={"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    ),
    AfterValidator(_http_url),
]
"""A URL selfheal may fetch: http(s) only, at most ``URL_MAX`` characters; a plain ``str``."""

LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX)]


def _names_bounded(names: Mapping[str, object], what: str) -> None:
    for name in names:
        if len(name) > LABEL_KEY_MAX:
            raise ValueError(
                f"{what} name {clip(name, 40)!r} has {len(name)} characters; "
                f"at most {LABEL_KEY_MAX}"
            )


def fit_labels(labels: Mapping[str, str], room: int = LABELS_MAX) -> dict[str, str]:
    """Labels cut to what a Fault holds, for a detector whose labels come from the outside:
    values over ``LABEL_VALUE_MAX`` are clipped (ending in '…'), names over ``LABEL_KEY_MAX``
    dropped, and only the first ``room`` labels kept."""
    fitted: dict[str, str] = {}
    for key, value in labels.items():
        if len(fitted) >= room:
            break
        if len(key) <= LABEL_KEY_MAX:
            fitted[key] = clip(value, LABEL_VALUE_MAX)
    return fitted


class MetricCheck(BaseModel):
    """A metric read from a Prometheus text endpoint; healthy while ``value <= max``."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrlStr = Field(
        description=f"http(s) URL of the endpoint, at most {URL_MAX} characters"
    )
    name: str = Field(
        max_length=METRIC_NAME_MAX,
        description='metric name, optionally with a label selector: m{a="b"} '
        f"(at most {METRIC_NAME_MAX} characters)",
    )
    max: float


class Fault(BaseModel):
    """Something in production is wrong. One fault, one healing: ``heal-<fingerprint>``.

    Every string is bounded (see each field); a report over a bound is refused naming the field.
    """

    model_config = ConfigDict(extra="forbid")

    fingerprint: str = Field(
        default="",
        max_length=FINGERPRINT_MAX,
        description="stable identity of the fault; derived from service, type and target if "
        f"empty (1-{FINGERPRINT_MAX} letters, digits, '.', '_', ':' or '-')",
    )
    service: str = Field(
        min_length=1,
        max_length=SERVICE_MAX,
        description=f"a service of the catalog (services.yaml); 1-{SERVICE_MAX} characters",
    )
    type: str = Field(
        min_length=1,
        max_length=TYPE_MAX,
        description=f"what is observed, e.g. health_check_failed (1-{TYPE_MAX} characters)",
    )
    target: str | None = Field(
        default=None,
        max_length=TARGET_MAX,
        description=f"what to act on, e.g. a process name (at most {TARGET_MAX} characters)",
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = Field(
        default="", max_length=SUMMARY_MAX, description=f"at most {SUMMARY_MAX} characters"
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=LABELS_MAX,
        description=f"at most {LABELS_MAX} labels; names at most {LABEL_KEY_MAX} characters, "
        f"values at most {LABEL_VALUE_MAX}",
    )
    values: dict[str, float] = Field(
        default_factory=dict,
        max_length=VALUES_MAX,
        description=f"the fault's own metrics (at most {VALUES_MAX}; names at most "
        f"{LABEL_KEY_MAX} characters)",
    )
    health_url: HttpUrlStr | None = Field(
        default=None,
        description=f"HTTP probe of the target's health (http or https, at most {URL_MAX} "
        "characters)",
    )
    metric: MetricCheck | None = None
    source: str = Field(
        default="manual", max_length=SOURCE_MAX, description=f"at most {SOURCE_MAX} characters"
    )
    detected_at: datetime = Field(default_factory=_now)
    dry_run: bool = Field(default=False, description="plan and gate, change nothing")
    require_approval: bool = Field(
        default=False, description="a human must approve the plan, whatever its risk"
    )

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_shape(cls, value: str) -> str:
        if value and not _FINGERPRINT.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names_bounded(cls, labels: dict[str, str]) -> dict[str, str]:
        _names_bounded(labels, "label")
        return labels

    @field_validator("values")
    @classmethod
    def _value_names_bounded(cls, values: dict[str, float]) -> dict[str, float]:
        _names_bounded(values, "value")
        return values

    @model_validator(mode="after")
    def _default_fingerprint(self) -> Fault:
        if not self.fingerprint:
            self.fingerprint = fingerprint_of(self.service, self.type, self.target)
        return self

    @property
    def workflow_id(self) -> str:
        return healing_workflow_id(self.fingerprint)


def fingerprint_of(service: str, fault_type: str, target: str | None) -> str:
    raw = "\x1f".join([service, fault_type, target or ""])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def healing_workflow_id(fingerprint: str) -> str:
    return f"heal-{fingerprint}"


class FaultUpdate(BaseModel):
    """Sent to a running healing with the ``fault_update`` signal.

    ``fired``: the fault was reported (again); every report counts, none starts a second healing.
    ``resolved``: the source says the fault is over.
    ``symptom``: another fault joins this healing as a secondary symptom.
    """

    kind: Literal["fired", "resolved", "symptom"]
    count: int = Field(default=1, ge=1, description="reports folded into this one (``fired``)")
    at: datetime = Field(default_factory=_now)
    fault: Fault | None = None
    note: str = ""


def render_params(params: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """Fill ``${fault.target}``, ``${fault.service}``, ``${fault.labels.KEY}`` in string params."""

    def lookup(path: str) -> str:
        node: Any = fault.model_dump(mode="json")
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"${{fault.{path}}}")
            node = node[part]
        return "" if node is None else str(node)

    def render(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: lookup(m.group(1)), value)
        if isinstance(value, dict):
            return {k: render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v) for v in value]
        return value

    rendered: dict[str, Any] = render(params)
    return rendered
