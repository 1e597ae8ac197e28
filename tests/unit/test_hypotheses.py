"""Ranked hypotheses from hand-made evidence: priors from the rules, findings as likelihood
ratios, learned records, missing evidence, and competition between explanations."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.diagnosis.hypotheses import RuleRecord, close_call, rank
from selfheal.diagnosis.rules import RuleMatch, RuleSet
from selfheal.domain import Finding, MissingEvidence

FAULT = {"fault.service": "checkout"}


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    return RuleSet.model_validate({"rules": list(rules)})


def spec(name: str, root_cause: str, confidence: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "when": {name: True}, "root_cause": root_cause,
            "confidence": confidence, **extra}  # fmt: skip


def matches(rules: RuleSet, *held: str, **facts: Any) -> list[RuleMatch]:
    return rules.matches(FAULT | {name: True for name in held} | facts)


def finding(kind: str, component: str, strength: float = 0.8) -> Finding:
    return Finding(source="test", kind=kind, component=component, strength=strength)


ORIGIN = spec("origin", "dependency_failing", 0.75, component="${origin_service}")
SLOW = spec("slow", "dependency_degraded", 0.75)


def test_one_hypothesis_keeps_its_rule_confidence() -> None:
    [h] = rank(matches(ruleset(SLOW), "slow"), [])
    assert (h.root_cause, h.component, h.confidence) == ("dependency_degraded", "checkout", 0.75)
    assert h.rule == "slow"
    assert h.evidence and h.evidence[0].startswith("rule slow (0.75)")


def test_no_rule_no_hypothesis() -> None:
    assert rank([], [finding("trace_origin", "inventory")]) == []


def test_two_equal_rivals_share_the_belief_and_make_a_close_call() -> None:
    rules = ruleset(ORIGIN, SLOW)
    ranked = rank(matches(rules, "origin", "slow", origin_service="inventory"), [])
    assert len(ranked) == 2
    assert ranked[0].confidence == ranked[1].confidence < 0.5
    assert close_call(ranked, margin=0.1)


def test_a_finding_on_the_component_lifts_it_above_its_rival() -> None:
    rules = ruleset(ORIGIN, SLOW)
    held = matches(rules, "origin", "slow", origin_service="inventory")
    ranked = rank(held, [finding("trace_origin", "inventory", 0.9)])
    assert [h.component for h in ranked] == ["inventory", "checkout"]
    assert ranked[0].confidence > ranked[1].confidence + 0.3
    assert not close_call(ranked, margin=0.1)
    assert any("trace_origin on inventory" in line for line in ranked[0].evidence)


def test_a_localising_finding_elsewhere_weighs_against() -> None:
    [alone] = rank(matches(ruleset(SLOW), "slow"), [])
    [against] = rank(matches(ruleset(SLOW), "slow"), [finding("trace_origin", "inventory")])
    [unrelated] = rank(matches(ruleset(SLOW), "slow"), [finding("oom_killed", "inventory")])
    assert against.confidence < alone.confidence == unrelated.confidence


def test_missing_evidence_lowers_the_confidence_and_says_why() -> None:
    gap = MissingEvidence(source="metrics", reason="no answer within 10s")
    [h] = rank(matches(ruleset(SLOW), "slow"), [], [gap])
    assert h.confidence == pytest.approx(0.75 * 0.9)
    assert "- missing metrics: no answer within 10s" in h.evidence


def test_agreeing_rules_merge_into_one_stronger_hypothesis() -> None:
    rules = ruleset(SLOW, spec("slow2", "dependency_degraded", 0.5))
    [h] = rank(matches(rules, "slow", "slow2"), [])
    assert h.confidence == pytest.approx(1 - 0.25 * 0.5)


def test_a_rule_that_keeps_failing_loses_confidence() -> None:
    held = matches(ruleset(SLOW), "slow")
    [fresh] = rank(held, [])
    [failing] = rank(held, [], history={"slow": RuleRecord(confirmed=0, total=12)})
    [proven] = rank(held, [], history={"slow": RuleRecord(confirmed=12, total=12)})
    assert failing.confidence < 0.3 < fresh.confidence < proven.confidence
    assert "history: 0 of 12 confirmed" in failing.evidence


def test_learned_likelihoods_weigh_a_kind_seen_when_the_rule_was_wrong() -> None:
    held = matches(ruleset(SLOW), "slow")
    record = RuleRecord(
        confirmed=10, total=20, kinds_confirmed={"oom_killed": 0}, kinds_refuted={"oom_killed": 9}
    )
    [h_without] = rank(held, [], history={"slow": record})
    [h_with] = rank(held, [finding("oom_killed", "checkout")], history={"slow": record})
    # support from a finding on its component, outweighed by what history learned about it
    assert h_with.confidence < h_without.confidence
    assert record.likelihood_ratio("never_seen") == pytest.approx(1.0 * (12 / 12))


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=6,
        unique_by=lambda pair: pair[0],
    ),
    st.lists(st.tuples(st.sampled_from(["trace_origin", "oom_killed"]), st.floats(0, 1))),
)
def test_confidences_are_probabilities_that_sum_to_at_most_one(
    rules: list[tuple[str, float]], kinds: list[tuple[str, float]]
) -> None:
    specs = [spec(name, f"cause_{name}", p, component=name) for name, p in rules]
    found = ruleset(*specs).matches(FAULT | {name: True for name, _ in rules})
    findings = [finding(kind, "a", strength) for kind, strength in kinds]
    ranked = rank(found, findings)
    assert all(0.0 <= h.confidence <= 1.0 for h in ranked)
    assert sum(h.confidence for h in ranked) <= 1.0 + 1e-3
    assert [h.confidence for h in ranked] == sorted((h.confidence for h in ranked), reverse=True)


def test_a_finding_about_a_root_cause_speaks_only_for_it() -> None:
    rules = ruleset(SLOW, spec("crash", "process_crashed", 0.75))
    held = matches(rules, "slow", "crash")
    past = Finding(
        source="history", kind="history_root_cause", component="checkout", strength=0.9,
        facts={"root_cause": "process_crashed"},
    )  # fmt: skip
    ranked = rank(held, [past])
    assert [h.root_cause for h in ranked] == ["process_crashed", "dependency_degraded"]
    assert ranked[0].confidence > ranked[1].confidence


def test_a_finding_whose_facts_the_rule_read_is_not_counted_twice() -> None:
    rules = ruleset(
        {"name": "origin", "when": {"traces.origin.is_dependency": True},
         "root_cause": "dependency_failing", "confidence": 0.75,
         "component": "${traces.origin.service}"}
    )  # fmt: skip
    held = rules.matches(
        FAULT | {"traces.origin.is_dependency": True, "traces.origin.service": "inventory"}
    )
    from_traces = Finding(source="traces", kind="trace_origin", component="inventory", strength=1)
    from_k8s = Finding(source="kubernetes", kind="crash_loop", component="inventory", strength=1)
    symptom = Finding(source="probe", kind="probe_http_error", component="inventory", strength=1)
    assert rank(held, [from_traces, symptom])[0].confidence == 0.75
    assert rank(held, [from_k8s])[0].confidence > 0.75
