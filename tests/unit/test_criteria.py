"""domain/criteria.py: expressions (parse, holds), what a validation criterion and a guard
accept, and a criterion result's verdict. Pure."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from selfheal.domain.criteria import (
    EXPRESSION_RULE,
    CriterionResult,
    Expression,
    GuardSpec,
    ValidationCriterion,
)


@pytest.mark.parametrize(
    ("text", "lhs", "op", "threshold"),
    [
        ("error_ratio < 0.01", "error_ratio", "<", 0.01),
        ("latency_p99<=0.3", "latency_p99", "<=", 0.3),
        ("  saturation >= 1e-3  ", "saturation", ">=", 0.001),
        ("requests > -5", "requests", ">", -5.0),
        ("restarts == 0", "restarts", "==", 0.0),
        ("up != .5", "up", "!=", 0.5),
        ("x > 1.", "x", ">", 1.0),
        # PromQL with its own operators and matchers: the last comparison splits it
        ("sum(rate(http_errors_total[1m])) == 0", "sum(rate(http_errors_total[1m]))", "==", 0.0),
        ('errors{code!="200",a=~"b"} < 2', 'errors{code!="200",a=~"b"}', "<", 2.0),
        ("a > b < 3", "a > b", "<", 3.0),
        ("rate(x[5m]) > 0 < 10", "rate(x[5m]) > 0", "<", 10.0),
    ],
)
def test_an_expression_splits_at_its_last_comparison(
    text: str, lhs: str, op: str, threshold: float
) -> None:
    expression = Expression.parse(text)
    assert (expression.lhs, expression.op, expression.threshold) == (lhs, op, threshold)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "error_ratio",
        "< 0.01",
        "error_ratio = 0.01",
        "error_ratio < high",
        "error_ratio < 0.01 extra",
        "error_ratio <",
        "error_ratio < 1e",
    ],
)
def test_a_malformed_expression_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        Expression.parse(text)
    assert EXPRESSION_RULE in str(raised.value)
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize(
    ("op", "below", "at", "above"),
    [
        ("<", True, False, False),
        ("<=", True, True, False),
        (">", False, False, True),
        (">=", False, True, True),
        ("==", False, True, False),
        ("!=", True, False, True),
    ],
)
def test_holds_compares_the_value_with_the_threshold(
    op: str, below: bool, at: bool, above: bool
) -> None:
    expression = Expression.parse(f"q {op} 0.5")
    assert [expression.holds(v) for v in (0.4, 0.5, 0.6)] == [below, at, above]


def test_an_expression_prints_as_written_in_canonical_form() -> None:
    assert str(Expression.parse("error_ratio<0.010")) == "error_ratio < 0.01"


def test_a_metric_criterion_parses_its_expression_and_is_labelled_by_it() -> None:
    criterion = ValidationCriterion(kind="metric", expr="error_ratio < 0.01")
    assert criterion.label == "error_ratio < 0.01"
    assert criterion.expression == Expression(lhs="error_ratio", op="<", threshold=0.01)
    assert criterion.optional is False
    named = ValidationCriterion(kind="metric", expr="latency_p99 <= 0.3", name="fast")
    assert named.label == "fast"


def test_other_kinds_are_labelled_by_their_kind_and_have_no_expression() -> None:
    for kind in ("alert_resolved", "rollout", "probe"):
        criterion = ValidationCriterion.model_validate({"kind": kind, "optional": True})
        assert criterion.label == kind
        assert criterion.expression is None


def errors_of(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as raised:
        ValidationCriterion.model_validate(data)
    return str(raised.value)


def test_a_metric_criterion_needs_an_expression() -> None:
    assert "a criterion of kind 'metric' needs 'expr'" in errors_of({"kind": "metric"})


def test_an_expression_belongs_to_metric_criteria_only() -> None:
    message = errors_of({"kind": "rollout", "expr": "restarts == 0"})
    assert "'expr' applies to kind 'metric' only, not 'rollout'" in message


def test_a_malformed_expression_is_refused_naming_the_field() -> None:
    message = errors_of({"kind": "metric", "expr": "error_ratio is low"})
    assert "expr" in message
    assert EXPRESSION_RULE in message


def test_an_unknown_kind_or_field_is_refused() -> None:
    assert "kind" in errors_of({"kind": "vibes"})
    assert "threshold" in errors_of({"kind": "probe", "threshold": 1})


def test_a_guard_checks_its_expression_too() -> None:
    guard = GuardSpec(name="pool", expr="pool_usage >= 0.9")
    assert guard.expression.holds(0.95)
    with pytest.raises(ValidationError, match="expected"):
        GuardSpec(name="pool", expr="pool_usage is high")


@pytest.mark.parametrize(
    ("ok", "optional", "passed"),
    [
        (True, False, True),
        (False, False, False),
        (None, False, False),
        (True, True, True),
        (False, True, False),
        (None, True, True),
    ],
)
def test_a_result_passes_when_it_held_or_is_optional_and_unknown(
    ok: bool | None, optional: bool, passed: bool
) -> None:
    result = CriterionResult(criterion="c", kind="metric", ok=ok, optional=optional)
    assert result.passed is passed
