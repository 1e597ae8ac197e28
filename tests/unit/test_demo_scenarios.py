from __future__ import annotations

import pytest

from selfheal.devstack.demo.scenarios import SCENARIOS, UnknownScenario, get_scenario
from selfheal.devstack.demo.target import SCENARIOS as INJECTABLE


def test_every_scenario_is_injectable_and_names_its_root_cause() -> None:
    assert set(SCENARIOS) == set(INJECTABLE)
    assert {name: s.root_cause for name, s in SCENARIOS.items()} == {
        "error_burst": "bad_feature_flag",
        "hang": "process_hung",
        "crash": "process_crashed",
        "poisoned_cache": "cache_poisoned",
        "dependency_slow": "dependency_degraded",
    }
    assert get_scenario("hang").inject_path == "/inject/hang"


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(UnknownScenario, match="'meteor'; known: error_burst, hang, crash"):
        get_scenario("meteor")
