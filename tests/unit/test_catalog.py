"""The solution catalog's YAML: what loads, what is skipped, and how mistakes are named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from selfheal.domain import ConfigError, RiskLevel, SolutionSpec
from selfheal.models.catalog import load_catalog
from selfheal.models.knowledge_base import content_hash
from tests.support import sample_registry

DEMO = """\
solutions:
  - name: restart-crashed-process
    pattern: process_crashed
    service: demo
    risk: medium
    prior_successes: 9
    prior_attempts: 10
    steps:
      - name: restart the process
        action: test.restart
        params: {process: "${fault.target}"}
        timeout_s: 60
        max_attempts: 3
      - action: test.wait
"""


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_the_documented_format(tmp_path: Path) -> None:
    write(tmp_path, "solutions/demo.yaml", DEMO)

    [spec] = load_catalog(tmp_path, registry=sample_registry())

    assert spec.name == "restart-crashed-process"
    assert spec.pattern == "process_crashed"
    assert spec.service == "demo"
    assert spec.risk is RiskLevel.MEDIUM
    assert (spec.prior_successes, spec.prior_attempts) == (9, 10)
    assert [step.action for step in spec.steps] == ["test.restart", "test.wait"]
    assert spec.steps[0].params == {"process": "${fault.target}"}
    assert spec.steps[0].label == "restart the process"
    assert spec.steps[1].label == "test.wait"


def test_reads_every_catalog_recursively_and_skips_other_runbooks(tmp_path: Path) -> None:
    write(tmp_path, "solutions/a.yaml", "solutions:\n- {name: a, pattern: p, steps: [{action: x}]}")
    write(tmp_path, "team/deep/b.yml", "solutions:\n- {name: b, pattern: p, steps: [{action: x}]}")
    write(tmp_path, "rules.yaml", "rules:\n- {name: r}\n")
    write(tmp_path, "services.yaml", "services: {demo: {}}\n")
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "notes.txt", "solutions: [not yaml we read]")

    assert sorted(spec.name for spec in load_catalog(tmp_path)) == ["a", "b"]


def test_a_single_file_can_be_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "demo.yaml", DEMO)
    assert [spec.name for spec in load_catalog(path)] == ["restart-crashed-process"]


def test_a_missing_field_names_file_solution_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "solutions/demo.yaml",
        """\
        solutions:
          - {name: one, pattern: p, steps: [{action: x}]}
          - {name: two, pattern: p, steps: [{action: x}]}
          - name: flush-cache
            pattern: p
            steps:
              - name: flush
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path)
    assert str(caught.value) == (
        f"{path}:7: solutions[2] (flush-cache): steps.0.action: Field required"
    )


def test_a_wrong_value_names_the_field_and_what_is_expected(tmp_path: Path) -> None:
    write(
        tmp_path, "s.yaml", "solutions:\n- {name: a, pattern: p, risk: huge, steps: [{action: x}]}"
    )
    with pytest.raises(
        ConfigError, match=r"s\.yaml:2: solutions\[0\] \(a\): risk: Input should be 'low'"
    ):
        load_catalog(tmp_path)


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path, "s.yaml", "solutions:\n- {name: a, pattern: p, steps: [{action: x, parms: {}}]}"
    )
    with pytest.raises(
        ConfigError,
        match=r":2: solutions\[0\] \(a\): steps\.0\.parms: Extra inputs are not permitted",
    ):
        load_catalog(tmp_path)


def test_a_solution_without_a_name_is_named_by_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "solutions:\n- {pattern: p, steps: [{action: x}]}")
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path)
    assert str(caught.value) == f"{path}:2: solutions[0]: name: Field required"


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "solutions/broken.yaml", "solutions:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: not valid YAML: "):
        load_catalog(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []\n", "1: expected a top-level 'solutions:' list"),
        ("", "1: expected a top-level 'solutions:' list"),
        ("- a\n", "1: expected a top-level 'solutions:' list"),
        ("solutions: {name: a}\n", "1: solutions: Input should be a valid list"),
        ("solutions: [just-a-name]\n", "1: solutions[0]: Input should be a valid dictionary"),
        ("solutions: []\nsolution: []\n", "2: solution: Extra inputs are not permitted"),
        (
            "solutions:\n- {name: a, pattern: p, steps: [{action: x}]}\n"
            "- {name: a, pattern: q, steps: [{action: x}]}\n",
            "3: solutions[1] (a): name: duplicate of ",
        ),
    ],
)
def test_a_malformed_catalog_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "solutions/x.yaml", text)
    with pytest.raises(ConfigError, match=rf"^{path}:") as caught:
        load_catalog(tmp_path)
    assert str(caught.value).startswith(f"{path}:{message}"), caught.value


def test_a_name_repeated_across_files_is_refused(tmp_path: Path) -> None:
    first = write(
        tmp_path, "a.yaml", "solutions:\n- {name: same, pattern: p, steps: [{action: x}]}"
    )
    second = write(
        tmp_path, "b.yaml", "solutions:\n- {name: same, pattern: q, steps: [{action: x}]}"
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path)
    assert str(caught.value) == (
        f"{second}:2: solutions[0] (same): name: duplicate of {first}:2: solutions[0] (same)"
    )


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such catalog file or directory"):
        load_catalog(tmp_path / "nowhere")


def test_with_a_registry_an_unknown_action_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "s.yaml", "solutions:\n- {name: a, pattern: p, steps: [{action: test.nope}]}"
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path, registry=sample_registry())
    assert str(caught.value).startswith(
        f"{path}:2: solutions[0] (a): steps.0.action: unknown action 'test.nope'"
    )


def test_with_a_registry_an_unknown_compensation_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        "s.yaml",
        """\
        solutions:
          - name: a
            pattern: p
            steps:
              - action: test.call
                compensate: {action: test.undo}
        """,
    )
    with pytest.raises(
        ConfigError, match=r":6: solutions\[0\] \(a\): steps\.0\.compensate\.action: unknown action"
    ):
        load_catalog(tmp_path, registry=sample_registry())


def test_with_a_registry_a_step_must_declare_its_undo(tmp_path: Path) -> None:
    text = "solutions:\n- {name: a, pattern: p, steps: [{action: test.wait}, {action: test.call}]}"
    write(tmp_path, "s.yaml", text)
    with pytest.raises(
        ConfigError,
        match=r":2: solutions\[0\] \(a\): steps\.1: step 'test\.call'.*'compensable: false'",
    ):
        load_catalog(tmp_path, registry=sample_registry())

    write(
        tmp_path,
        "s.yaml",
        text.replace("{action: test.call}", "{action: test.call, compensable: false}"),
    )
    assert [spec.name for spec in load_catalog(tmp_path, registry=sample_registry())] == ["a"]


def test_content_hash_follows_content_not_spelling() -> None:
    base = {"name": "a", "pattern": "p", "steps": [{"action": "test.wait"}]}
    spec = SolutionSpec.model_validate(base)
    spelled_out = SolutionSpec.model_validate(
        {**base, "risk": "medium", "steps": [{"action": "test.wait", "params": {}}]}
    )
    changed = SolutionSpec.model_validate(
        {**base, "steps": [{"action": "test.wait", "timeout_s": 5}]}
    )

    assert content_hash(spec) == content_hash(spelled_out)
    assert content_hash(spec) != content_hash(changed)


def test_an_empty_solutions_list_holds_nothing(tmp_path: Path) -> None:
    write(tmp_path, "solutions/placeholder.yaml", "solutions:\n")
    write(tmp_path, "solutions/none.yaml", "solutions: []\n")
    assert load_catalog(tmp_path) == []
