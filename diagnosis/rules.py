"""Diagnosis rules: data in ``runbooks/rules.yaml``, evaluated over an evidence's flat facts.

A rule's ``when`` is a decision tree: fact conditions (all must hold) and the combinators
``all: [...]``, ``any: [...]`` and ``not: {...}``, nested freely. A rule that holds proposes a
hypothesis: its root cause on its ``component`` (a template over the facts, e.g.
``${traces.origin.service}``; the fault's service by default), with its base ``confidence``
plus the ``add`` of each ``boosts`` entry whose own ``when`` holds, capped at 1.0. A rule marked
``fallback`` proposes only when no other rule holds: generic explanations ("the service answers
5xx") must not compete with specific ones. ``diagnosis/hypotheses.py`` ranks what the rules
propose together with the providers' findings and the learned history.
``runbooks/README.md`` documents the format.
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

OPERATORS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "exists", "matches")
COMBINATORS = ("all", "any", "not")
UNKNOWN_ROOT_CAUSE = "unknown"
NO_RULE = "none"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MISSING = object()
_REFERENCE = re.compile(r"^\$\{([A-Za-z0-9_.-]+)\}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(fact: Any, expected: Any) -> bool:
    # True == 1 in Python; a flag that is true must not match a status of 1.
    if isinstance(fact, bool) or isinstance(expected, bool):
        return isinstance(fact, bool) and isinstance(expected, bool) and fact is expected
    return bool(fact == expected)


class Condition(BaseModel):
    """What one fact must satisfy. Several operators in one condition must all hold.

    A bare scalar in YAML means equality: ``probe_error: timeout`` is ``{eq: timeout}``. The
    value of ``eq`` and ``ne`` may name another fact, ``${fault.service}``: the comparison is
    then with that fact's value (and fails when it is absent).
    """

    model_config = ConfigDict(extra="forbid")

    eq: Scalar | None = None
    ne: Scalar | None = None
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

    def holds(self, fact: Any, facts: Facts | None = None) -> bool:
        """``fact`` is the fact's value, or absent (``_MISSING``); None counts as absent.
        ``facts`` resolves ``${name}`` references in ``eq`` and ``ne``."""
        present = fact is not _MISSING and fact is not None
        if self.exists is not None and present is not self.exists:
            return False
        if not present:
            # exists: false is the only test a missing fact can pass
            return self.exists is False and self._only_exists()
        if self.eq is not None:
            expected = _resolve(self.eq, facts)
            if expected is _MISSING or not _equal(fact, expected):
                return False
        if self.ne is not None:
            other = _resolve(self.ne, facts)
            if other is _MISSING or _equal(fact, other):
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


def _resolve(value: Any, facts: Facts | None) -> Any:
    """``${name}`` → the fact's value (``_MISSING`` when absent); any other value as is."""
    if isinstance(value, str) and (ref := _REFERENCE.match(value)) is not None:
        found = (facts or {}).get(ref.group(1))
        return _MISSING if found is None else found
    return value


class When(BaseModel):
    """A decision tree over facts. Keys other than ``all``, ``any`` and ``not`` are fact names
    with their condition; everything given must hold."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    __pydantic_extra__: dict[str, Condition] = Field(init=False)

    all_: list[When] | None = Field(default=None, alias="all", min_length=1)
    any_: list[When] | None = Field(default=None, alias="any", min_length=1)
    not_: When | None = Field(default=None, alias="not")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(
                "expected a mapping of fact names to conditions, or all/any/not "
                f"(got {type(data).__name__})"
            )
        if not data:
            raise ValueError("give at least one condition")
        return data

    @property
    def conditions(self) -> dict[str, Condition]:
        return dict(self.__pydantic_extra__ or {})

    def holds(self, facts: Facts) -> bool:
        if not all(c.holds(facts.get(k, _MISSING), facts) for k, c in self.conditions.items()):
            return False
        if self.all_ is not None and not all(w.holds(facts) for w in self.all_):
            return False
        if self.any_ is not None and not any(w.holds(facts) for w in self.any_):
            return False
        return not (self.not_ is not None and self.not_.holds(facts))

    def used(self, facts: Facts) -> Facts:
        """The observed facts that made this (holding) tree hold: its conditions, every branch
        of ``all``, the branches of ``any`` that hold; absent facts are left out, and so is
        ``not`` (what it read is what was not the case)."""
        found: Facts = {k: facts[k] for k in self.conditions if facts.get(k) is not None}
        held = [w for w in self.any_ or [] if w.holds(facts)]
        for child in [*(self.all_ or []), *held]:
            found.update(child.used(facts))
        return found


class Boost(BaseModel):
    """An optional signal: when its conditions hold, the rule's confidence rises by ``add``."""

    model_config = ConfigDict(extra="forbid")

    when: When
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
    component: str


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    priority: int = Field(default=0, description="breaks ties between equally confident rules")
    when: When
    root_cause: str = Field(pattern=_NAME)
    component: str | None = Field(
        default=None,
        description="the service to act on: a name or a template over the facts, e.g. "
        "${traces.origin.service}; unset: the fault's own service",
    )
    confidence: float = Field(ge=0.0, le=1.0, description="base confidence when `when` holds")
    boosts: list[Boost] = Field(default_factory=list)
    fallback: bool = Field(
        default=False, description="proposes only when no other (non-fallback) rule holds"
    )
    summary: str = ""
    default_plan: DefaultPlan | None = None

    def match(self, facts: Facts) -> RuleMatch | None:
        if not self.when.holds(facts):
            return None
        confidence = self.confidence
        used = self.when.used(facts)
        for boost in self.boosts:
            if boost.when.holds(facts):
                confidence += boost.add
                used.update(boost.when.used(facts))
        template = self.component or "${fault.service}"
        component = render_component(template, facts)
        if component is None:
            if self.component is not None:
                return None  # the component names a fact that was not observed
            component = ""  # hand-made facts without the fault's service
        return RuleMatch(self, round(min(confidence, 1.0), 4), used, component)


def render_component(template: str, facts: Facts) -> str | None:
    """The component a rule names, its ``${fact}`` placeholders filled; None if one is absent."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = facts.get(match.group(1))
        if value is None or isinstance(value, dict | list):
            missing = True
            return ""
        return str(value)

    rendered = _PLACEHOLDER.sub(fill, template)
    return None if missing or not rendered else rendered


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(description="names unique (``load_rules`` checks it)")

    def matches(self, facts: Facts) -> list[RuleMatch]:
        """Every rule that holds, fallbacks only when nothing else does; best first (higher
        confidence, then priority, then file order)."""
        held = [m for rule in self.rules if (m := rule.match(facts)) is not None]
        specific = [m for m in held if not m.rule.fallback]
        chosen = specific or held
        order = {id(rule): index for index, rule in enumerate(self.rules)}
        return sorted(chosen, key=lambda m: (-m.confidence, -m.rule.priority, order[id(m.rule)]))

    def best_match(self, facts: Facts) -> RuleMatch | None:
        found = self.matches(facts)
        return found[0] if found else None

    def diagnose(self, facts: Facts) -> Diagnosis:
        """The best match alone as a Diagnosis (``diagnosis.hypotheses`` ranks them all);
        ``unknown`` with every fact when no rule holds."""
        found = self.best_match(facts)
        if found is None:
            return unknown_diagnosis(facts)
        return diagnosis_of(found)


def unknown_diagnosis(facts: Facts) -> Diagnosis:
    return Diagnosis(
        root_cause=UNKNOWN_ROOT_CAUSE,
        confidence=0.0,
        rule=NO_RULE,
        summary="no diagnosis rule matches the evidence",
        evidence_used=dict(facts),
    )


def diagnosis_of(found: RuleMatch, confidence: float | None = None) -> Diagnosis:
    rule = found.rule
    plan = rule.default_plan
    return Diagnosis(
        root_cause=rule.root_cause,
        confidence=found.confidence if confidence is None else confidence,
        rule=rule.name,
        summary=rule.summary or f"rule {rule.name} matches",
        evidence_used=found.evidence_used,
        default_plan=list(plan.steps) if plan else [],
        default_risk=plan.risk if plan else RiskLevel.MEDIUM,
        component=found.component,
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
