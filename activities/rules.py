"""Diagnosis rules: data in ``runbooks/rules.yaml``, matched against an evidence's flat facts.

A rule holds when every condition of its ``when`` holds. Its confidence is its base
``confidence`` plus the ``add`` of each ``boosts`` entry whose own ``when`` holds, capped at 1.0:
optional signals that agree make a diagnosis surer, and their absence never blocks it.
The best match is the holding rule of highest ``priority``; ties go to the higher confidence,
then to the earlier rule in the file. ``runbooks/README.md`` documents the format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from selfheal.core.yaml_source import Problem, load_yaml
from selfheal.domain import Diagnosis, RecoveryStep, RiskLevel

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
Number = Annotated[float, Strict()]
Facts = dict[str, Any]

OPERATORS = ("eq", "in", "gt", "gte", "lt", "lte", "exists", "matches")
UNKNOWN_ROOT_CAUSE = "unknown"
NO_RULE = "none"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(fact: Any, expected: Any) -> bool:
    # True == 1 in Python; a flag that is true must not match a status of 1.
    if isinstance(fact, bool) or isinstance(expected, bool):
        return isinstance(fact, bool) and isinstance(expected, bool) and fact is expected
    return bool(fact == expected)


class Condition(BaseModel):
    """What one fact must satisfy. Several operators in one condition must all hold.

    A bare scalar in YAML means equality: ``probe_error: timeout`` is ``{eq: timeout}``.
    """

    model_config = ConfigDict(extra="forbid")

    eq: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    exists: StrictBool | None = None
    matches: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data is None:
            raise ValueError("null compares to nothing: write {exists: false} for a missing fact")
        if isinstance(data, list):
            raise ValueError("a list is ambiguous here: write {in: [...]}")
        if not isinstance(data, dict):
            return {"eq": data}
        unknown = [str(key) for key in data if key not in OPERATORS]
        if unknown:
            raise ValueError(
                f"unknown operator {', '.join(unknown)} (operators: {', '.join(OPERATORS)}); "
                "name nested facts with dots, e.g. body.checks.cache"
            )
        if not data:
            raise ValueError(f"give at least one operator of {', '.join(OPERATORS)}")
        return data

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def holds(self, fact: Any) -> bool:
        """``fact`` is the fact's value, or absent (``_MISSING``); None counts as absent."""
        present = fact is not _MISSING and fact is not None
        if self.exists is not None and present is not self.exists:
            return False
        if not present:
            # exists: false is the only test a missing fact can pass
            return self.exists is False and self._only_exists()
        if self.eq is not None and not _equal(fact, self.eq):
            return False
        if self.in_ is not None and not any(_equal(fact, v) for v in self.in_):
            return False
        if not self._compares(fact):
            return False
        if self.matches is not None:
            if isinstance(fact, bool) or not isinstance(fact, str | int | float):
                return False
            if re.search(self.matches, str(fact)) is None:
                return False
        return True

    def _only_exists(self) -> bool:
        return self.model_fields_set <= {"exists"}

    def _compares(self, fact: Any) -> bool:
        bounds = (self.gt, self.gte, self.lt, self.lte)
        if all(bound is None for bound in bounds):
            return True
        if not _is_number(fact):
            return False
        return (
            (self.gt is None or fact > self.gt)
            and (self.gte is None or fact >= self.gte)
            and (self.lt is None or fact < self.lt)
            and (self.lte is None or fact <= self.lte)
        )


Conditions = Annotated[dict[str, Condition], Field(min_length=1)]


def _all_hold(conditions: dict[str, Condition], facts: Facts) -> bool:
    return all(cond.holds(facts.get(key, _MISSING)) for key, cond in conditions.items())


def _used(conditions: dict[str, Condition], facts: Facts) -> Facts:
    return {key: facts.get(key) for key in conditions}


class Boost(BaseModel):
    """An optional signal: when its conditions hold, the rule's confidence rises by ``add``."""

    model_config = ConfigDict(extra="forbid")

    when: Conditions
    add: float = Field(gt=0.0, le=1.0)


class DefaultPlan(BaseModel):
    """The plan used when the knowledge base has no solution for the root cause."""

    model_config = ConfigDict(extra="forbid")

    risk: RiskLevel = RiskLevel.MEDIUM
    steps: list[RecoveryStep] = Field(min_length=1)


@dataclass(frozen=True)
class RuleMatch:
    rule: Rule
    confidence: float
    evidence_used: Facts


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    priority: int = Field(default=0, description="higher is tried first")
    when: Conditions
    root_cause: str = Field(pattern=_NAME)
    confidence: float = Field(ge=0.0, le=1.0, description="base confidence when `when` holds")
    boosts: list[Boost] = Field(default_factory=list)
    summary: str = ""
    default_plan: DefaultPlan | None = None

    def match(self, facts: Facts) -> RuleMatch | None:
        if not _all_hold(self.when, facts):
            return None
        confidence = self.confidence
        used = _used(self.when, facts)
        for boost in self.boosts:
            if _all_hold(boost.when, facts):
                confidence += boost.add
                used.update(_used(boost.when, facts))
        return RuleMatch(self, round(min(confidence, 1.0), 4), used)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(description="names unique (``load_rules`` checks it)")

    def best_match(self, facts: Facts) -> RuleMatch | None:
        matches = [m for rule in self.rules if (m := rule.match(facts)) is not None]
        if not matches:
            return None
        # max() keeps the first of equal keys: file order breaks the last tie
        return max(matches, key=lambda m: (m.rule.priority, m.confidence))

    def diagnose(self, facts: Facts) -> Diagnosis:
        """The best match as a Diagnosis; ``unknown`` with every fact when no rule holds."""
        found = self.best_match(facts)
        if found is None:
            return Diagnosis(
                root_cause=UNKNOWN_ROOT_CAUSE,
                confidence=0.0,
                rule=NO_RULE,
                summary="no diagnosis rule matches the evidence",
                evidence_used=dict(facts),
            )
        rule = found.rule
        plan = rule.default_plan
        return Diagnosis(
            root_cause=rule.root_cause,
            confidence=found.confidence,
            rule=rule.name,
            summary=rule.summary or f"rule {rule.name} matches",
            evidence_used=found.evidence_used,
            default_plan=list(plan.steps) if plan else [],
            default_risk=plan.risk if plan else RiskLevel.MEDIUM,
        )


def load_rules(path: Path) -> RuleSet:
    """Read a rules file. Errors name the file, line, rule and field: ``ConfigError``."""
    return load_yaml(
        path,
        RuleSet,
        what="rules file",
        checks=[rule_problems],
        expected="a mapping with a 'rules' list",
    )


def rule_problems(ruleset: RuleSet) -> Iterator[Problem]:
    """Rule names are unique: a diagnosis names the rule that made it."""
    seen: set[str] = set()
    for index, rule in enumerate(ruleset.rules):
        if rule.name in seen:
            yield Problem(("rules", index, "name"), f"rule name {rule.name!r} is used twice")
        seen.add(rule.name)
