"""Diagnosis rules: operators, confidence, best match, and loader errors that say where."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from selfheal.diagnosis.rules import Condition, Rule, RuleSet, load_rules
from selfheal.domain import ConfigError, RiskLevel


def cond(spec: Any) -> Condition:
    return Condition.model_validate(spec)


def rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {"name": "r", "when": {"x": 1}, "root_cause": "c", "confidence": 0.5}
    return Rule.model_validate(base | fields)


MISSING = object()


def holds(spec: Any, *facts: Any) -> list[bool]:
    """Whether the condition holds for each fact value (MISSING = fact absent)."""
    ruleset = RuleSet.model_validate(
        {"rules": [{"name": "r", "when": {"f": spec}, "root_cause": "c", "confidence": 1.0}]}
    )
    return [
        ruleset.best_match({} if fact is MISSING else {"f": fact}) is not None for fact in facts
    ]


class TestOperators:
    def test_scalar_is_equality(self) -> None:
        assert holds("timeout", "timeout", "Timeout", MISSING, None) == [True, False, False, False]
        assert holds(503, 503, 503.0, "503", MISSING) == [True, True, False, False]

    def test_booleans_only_equal_booleans(self) -> None:
        assert holds(True, True, 1, "true", False) == [True, False, False, False]
        assert holds(1, 1, True) == [True, False]
        assert holds({"in": [0, 1]}, False, 0) == [False, True]

    def test_in(self) -> None:
        assert holds({"in": ["a", "b"]}, "a", "b", "c", MISSING) == [True, True, False, False]

    def test_comparisons_need_numbers(self) -> None:
        assert holds({"gt": 0.5}, 0.6, 0.5, 1, "0.9", True, MISSING) == [
            True, False, True, False, False, False,
        ]  # fmt: skip
        assert holds({"gte": 0.5}, 0.5, 0.49) == [True, False]
        assert holds({"lt": 10}, 9, 10) == [True, False]
        assert holds({"lte": 10}, 10, 10.01) == [True, False]

    def test_operators_in_one_condition_all_hold(self) -> None:
        assert holds({"gte": 500, "lt": 600}, 499, 500, 599, 600) == [False, True, True, False]

    def test_exists(self) -> None:
        assert holds({"exists": True}, "x", 0, False, MISSING, None) == [
            True, True, True, False, False,
        ]  # fmt: skip
        assert holds({"exists": False}, MISSING, None, "x") == [True, True, False]

    def test_exists_false_with_other_operators_never_matches_absent(self) -> None:
        assert holds({"exists": False, "eq": "x"}, MISSING) == [False]

    def test_matches_searches_text_of_strings_and_numbers(self) -> None:
        assert holds({"matches": "^5\\d\\d$"}, 503, "503", 200, True, MISSING) == [
            True, True, False, False, False,
        ]  # fmt: skip
        assert holds({"matches": "error"}, "demo_error_ratio", "latency") == [True, False]


class TestConditionModel:
    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            (None, "exists: false"),
            (["a", "b"], "{in: [...]}"),
            ({}, "at least one operator"),
            ({"checks": {"cache": "poisoned"}}, "unknown operator checks"),
            ({"matches": "("}, "not a valid regular expression"),
            ({"gt": "5"}, "valid number"),
            ({"in": []}, "at least 1 item"),
        ],
    )
    def test_bad_conditions_say_why(self, spec: Any, message: str) -> None:
        with pytest.raises(ValueError) as info:
            cond(spec)
        assert message in str(info.value)


class TestConfidence:
    def test_boosts_add_when_they_hold_and_cap_at_one(self) -> None:
        r = rule(
            confidence=0.7,
            boosts=[
                {"when": {"y": "a"}, "add": 0.2},
                {"when": {"z": {"gt": 1}}, "add": 0.25},
            ],
        )
        confidences = [
            found.confidence if (found := r.match(facts)) else None
            for facts in ({"x": 1}, {"x": 1, "y": "a"}, {"x": 1, "y": "a", "z": 2})
        ]
        assert confidences == [0.7, 0.9, 1.0]

    def test_boosts_alone_do_not_make_a_rule_hold(self) -> None:
        r = rule(boosts=[{"when": {"y": "a"}, "add": 0.2}])
        assert r.match({"y": "a"}) is None

    def test_evidence_used_has_the_facts_of_when_and_of_boosts_that_held(self) -> None:
        r = rule(
            when={"x": 1, "gone": {"exists": False}},
            boosts=[{"when": {"y": "a"}, "add": 0.1}, {"when": {"z": 1}, "add": 0.1}],
        )
        found = r.match({"x": 1, "y": "a", "z": 2, "other": 3})
        assert found is not None
        # facts that were not observed are left out: "gone" held by being absent
        assert found.evidence_used == {"x": 1, "y": "a"}


class TestBestMatch:
    def ruleset(self) -> RuleSet:
        return RuleSet.model_validate(
            {
                "rules": [
                    {"name": "low", "priority": 1, "when": {"a": 1}, "root_cause": "low",
                     "confidence": 0.9},
                    {"name": "high", "priority": 5, "when": {"a": 1, "b": 2},
                     "root_cause": "high", "confidence": 0.6},
                    {"name": "high-surer", "priority": 5, "when": {"a": 1, "c": 3},
                     "root_cause": "surer", "confidence": 0.8},
                    {"name": "high-surer-later", "priority": 5, "when": {"a": 1, "c": 3},
                     "root_cause": "later", "confidence": 0.8},
                ]
            }
        )  # fmt: skip

    def test_confidence_first_then_priority(self) -> None:
        # every holding rule proposes; the best is the most confident, whatever its priority
        assert self.ruleset().diagnose({"a": 1, "b": 2}).rule == "low"
        assert [m.rule.name for m in self.ruleset().matches({"a": 1, "b": 2})] == ["low", "high"]

    def test_then_file_order(self) -> None:
        assert self.ruleset().diagnose({"a": 1, "b": 2, "c": 3}).rule == "low"
        names = [m.rule.name for m in self.ruleset().matches({"a": 1, "b": 2, "c": 3})]
        assert names == ["low", "high-surer", "high-surer-later", "high"]

    def test_fallback_rules_only_when_nothing_else_holds(self) -> None:
        ruleset = RuleSet.model_validate(
            {
                "rules": [
                    {"name": "generic", "fallback": True, "when": {"a": 1}, "root_cause": "g",
                     "confidence": 0.9},
                    {"name": "specific", "when": {"a": 1, "b": 2}, "root_cause": "s",
                     "confidence": 0.4},
                ]
            }
        )  # fmt: skip
        assert [m.rule.name for m in ruleset.matches({"a": 1, "b": 2})] == ["specific"]
        assert [m.rule.name for m in ruleset.matches({"a": 1})] == ["generic"]

    def test_no_match_is_unknown_with_every_fact(self) -> None:
        diagnosis = self.ruleset().diagnose({"a": 2, "z": "seen"})
        assert diagnosis.root_cause == "unknown"
        assert diagnosis.rule == "none"
        assert diagnosis.confidence == 0.0
        assert diagnosis.default_plan == []
        assert diagnosis.evidence_used == {"a": 2, "z": "seen"}

    def test_default_plan_and_risk_come_from_the_rule(self) -> None:
        ruleset = RuleSet.model_validate(
            {
                "rules": [
                    {
                        "name": "crash",
                        "when": {"probe_error": "connection_refused"},
                        "root_cause": "process_crashed",
                        "confidence": 0.9,
                        "summary": "not listening",
                        "default_plan": {
                            "risk": "high",
                            "steps": [{"action": "process.restart", "params": {"process": "p"}}],
                        },
                    }
                ]
            }
        )
        diagnosis = ruleset.diagnose({"probe_error": "connection_refused"})
        assert diagnosis.root_cause == "process_crashed"
        assert diagnosis.summary == "not listening"
        assert diagnosis.default_risk is RiskLevel.HIGH
        assert [s.action for s in diagnosis.default_plan] == ["process.restart"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


class TestLoader:
    def test_loads_a_valid_file(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - name: crash
                priority: 10
                when: {probe_error: connection_refused, fault.type: {in: [a, b]}}
                root_cause: process_crashed
                confidence: 0.9
            """,
        )
        ruleset = load_rules(path)
        assert [r.name for r in ruleset.rules] == ["crash"]
        assert ruleset.rules[0].when.conditions["fault.type"].in_ == ["a", "b"]

    def test_error_names_file_line_rule_and_field(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - name: fine
                when: {a: 1}
                root_cause: c
                confidence: 0.5
              - name: process-crashed
                when:
                  probe_error: {gt: high}
                root_cause: c
                confidence: 0.5
            """,
        )
        with pytest.raises(ConfigError) as info:
            load_rules(path)
        assert str(info.value) == (
            f"{path}:8: rules[1] (process-crashed): when.probe_error.gt: "
            "Input should be a valid number"
        )

    def test_missing_field_points_at_the_rule(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - name: no-cause
                when: {a: 1}
                confidence: 0.5
            """,
        )
        with pytest.raises(ConfigError, match=r"rules.yaml:2: rules\[0\] \(no-cause\): "
                           r"root_cause: Field required"):  # fmt: skip
            load_rules(path)

    def test_unknown_key_is_refused(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - name: typo
                when: {a: 1}
                root_cause: c
                confidence: 0.5
                confidense: 0.9
            """,
        )
        with pytest.raises(ConfigError, match=r":6: rules\[0\] \(typo\): confidense: Extra"):
            load_rules(path)

    def test_duplicate_yaml_key_is_refused(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - name: twice
                when:
                  probe_error: timeout
                  probe_error: connection_refused
                root_cause: c
                confidence: 0.5
            """,
        )
        with pytest.raises(ConfigError, match=r":5: not valid YAML: key 'probe_error' appears"):
            load_rules(path)

    def test_duplicate_rule_name_is_refused(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """
            rules:
              - {name: same, when: {a: 1}, root_cause: c, confidence: 0.5}
              - {name: same, when: {b: 1}, root_cause: c, confidence: 0.5}
            """,
        )
        with pytest.raises(
            ConfigError,
            match=r"rules.yaml:3: rules\[1\] \(same\): name: rule name 'same' is used twice",
        ):
            load_rules(path)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("rules: [\n", ":2: not valid YAML"),
            ("- a\n", ":1: expected a mapping with a 'rules' list, got list"),
            ("", ":1: rules: Field required"),
            ("rules: 3\n", ":1: rules: Input should be a valid list"),
            ("rules:\n  - name: x\n    when: {}\n    root_cause: c\n    confidence: 2\n",
             ":3: rules[0] (x): when: give at least one condition"),
        ],
    )  # fmt: skip
    def test_malformed_files(self, tmp_path: Path, text: str, message: str) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_rules(path)
        assert str(info.value).startswith(f"{path}{message}"), info.value

    def test_unreadable_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read the rules file"):
            load_rules(tmp_path / "absent.yaml")


class TestDecisionTree:
    def tree(self, when: Any, component: str | None = None) -> RuleSet:
        spec: dict[str, Any] = {"name": "t", "when": when, "root_cause": "c", "confidence": 0.7}
        if component is not None:
            spec["component"] = component
        return RuleSet.model_validate({"rules": [spec]})

    def test_all_any_not_nest(self) -> None:
        ruleset = self.tree(
            {"all": [{"a": 1}, {"any": [{"b": {"gt": 2}}, {"not": {"c": {"exists": True}}}]}]}
        )
        assert ruleset.best_match({"a": 1, "b": 3, "c": 1}) is not None
        assert ruleset.best_match({"a": 1, "b": 1}) is not None  # no c: the not holds
        assert ruleset.best_match({"a": 1, "b": 1, "c": 1}) is None
        assert ruleset.best_match({"b": 3}) is None

    def test_facts_and_combinators_in_one_mapping_all_hold(self) -> None:
        ruleset = self.tree({"a": 1, "any": [{"b": 1}, {"c": 1}]})
        assert ruleset.best_match({"a": 1, "c": 1}) is not None
        assert ruleset.best_match({"a": 2, "c": 1}) is None

    def test_eq_and_ne_may_name_another_fact(self) -> None:
        ruleset = self.tree({"origin": {"ne": "${fault.service}"}})
        assert ruleset.best_match({"origin": "inventory", "fault.service": "checkout"})
        assert ruleset.best_match({"origin": "checkout", "fault.service": "checkout"}) is None
        # the referenced fact is absent: the comparison cannot hold
        assert ruleset.best_match({"origin": "inventory"}) is None
        same = self.tree({"origin": {"eq": "${fault.service}"}})
        assert same.best_match({"origin": "checkout", "fault.service": "checkout"})

    def test_component_is_a_template_over_the_facts(self) -> None:
        ruleset = self.tree({"origin": {"exists": True}}, component="${origin}")
        found = ruleset.best_match({"origin": "inventory", "fault.service": "checkout"})
        assert found is not None and found.component == "inventory"
        assert ruleset.diagnose({"origin": "inventory"}).component == "inventory"
        default = self.tree({"a": 1})
        found = default.best_match({"a": 1, "fault.service": "checkout"})
        assert found is not None and found.component == "checkout"

    def test_component_naming_an_absent_fact_proposes_nothing(self) -> None:
        ruleset = self.tree({"a": 1}, component="${origin}")
        assert ruleset.best_match({"a": 1}) is None

    @pytest.mark.parametrize(
        ("when", "message"),
        [
            ({"all": []}, "all: List should have at least 1 item"),
            ({"any": [{"x": {"bogus": 1}}]}, "any.0.x: unknown operator bogus"),
            ({"not": 3}, "not: expected a mapping"),
        ],
    )
    def test_bad_trees_say_where(self, tmp_path: Path, when: Any, message: str) -> None:
        import yaml

        path = tmp_path / "rules.yaml"
        rule_spec = {"name": "t", "when": when, "root_cause": "c", "confidence": 0.5}
        path.write_text(yaml.safe_dump({"rules": [rule_spec]}))
        with pytest.raises(ConfigError) as info:
            load_rules(path)
        assert f"rules[0] (t): when.{message}" in str(info.value)
