"""The worker's rules follow the file: an edit applies at the next diagnosis, a broken edit keeps
the last good rules and says why; ``selfheal rules check`` tells before the worker does."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfheal.activities.diagnosis import DiagnosisActivities, RulesSource
from selfheal.activities.evidence.base import EvidenceProviders
from selfheal.cli.main import app
from selfheal.domain import ConfigError, Evidence, Fault
from selfheal.domain.payloads import DiagnoseInput

RULE = """
rules:
  - name: {name}
    when: {{probe_error: timeout}}
    root_cause: {cause}
    confidence: 0.8
"""


def write(path: Path, text: str, *, bump: int) -> None:
    path.write_text(text)
    # a distinct mtime even on a coarse clock: the reload keys on (mtime, size)
    stamp = 1_700_000_000 + bump
    os.utime(path, (stamp, stamp))


def diagnose(activities: DiagnosisActivities) -> str:
    fault = Fault(service="checkout", type="health_check_failed")
    evidence = Evidence(collected_at=datetime.now(UTC), facts={"probe_error": "timeout"})
    diagnosis = asyncio.run(
        activities.diagnose_fault(DiagnoseInput(fault=fault, evidence=evidence))
    )
    return diagnosis.root_cause


def test_an_edit_applies_at_the_next_diagnosis_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULE.format(name="hung", cause="process_hung"), bump=1)
    source = RulesSource(path)
    activities = DiagnosisActivities(source, EvidenceProviders([]))
    assert diagnose(activities) == "process_hung"

    write(path, RULE.format(name="hung", cause="frozen"), bump=2)
    assert diagnose(activities) == "frozen"
    assert source.last_error is None

    write(path, RULE.format(name="hung", cause="frozen") + "    bogus: 1\n", bump=3)
    assert diagnose(activities) == "frozen"  # the last good rules
    assert source.last_error is not None
    assert "rules[0] (hung): bogus: Extra inputs are not permitted" in source.last_error

    write(path, RULE.format(name="hung", cause="stuck"), bump=4)
    assert diagnose(activities) == "stuck"
    assert source.last_error is None


def test_a_deleted_file_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULE.format(name="hung", cause="process_hung"), bump=1)
    source = RulesSource(path)
    path.unlink()
    assert [r.name for r in source.current().rules] == ["hung"]


def test_the_first_load_must_succeed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RulesSource(path)


def test_rules_check_says_ok_or_where_the_mistake_is(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(RULE.format(name="hung", cause="process_hung"))
    result = runner.invoke(app, ["rules", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{good}: 1 rules (0 fallback), 1 root causes: ok"

    bad = tmp_path / "bad.yaml"
    bad.write_text(RULE.format(name="hung", cause="process_hung").replace("0.8", "8"))
    result = runner.invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:6: rules[0] (hung): confidence:" in result.output
    assert "Traceback" not in result.output


def test_the_shipped_rules_check() -> None:
    shipped = Path(__file__).resolve().parents[2] / "runbooks" / "rules.yaml"
    result = CliRunner().invoke(app, ["rules", "check", str(shipped)])
    assert result.exit_code == 0, result.output
