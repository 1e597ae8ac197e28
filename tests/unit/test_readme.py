"""The README's lists of names that the code defines: the demo's scenarios (``selfheal dev --demo
list``) and a healing's phases and outcomes. A scenario or phase added, renamed or removed in the
code fails here until the README says the same."""

from __future__ import annotations

import re
from pathlib import Path

from selfheal.devstack.demo.scenarios import SCENARIOS
from selfheal.domain import HealingOutcome, HealingPhase

README = Path(__file__).resolve().parents[2] / "README.md"


def paragraph(text: str, start: str) -> str:
    """The paragraph (or list item) that begins with ``start``, its lines joined."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith(start)), None)
    assert first is not None, f"README.md has no paragraph starting with {start!r}"
    block = [lines[first].strip()]
    for line in lines[first + 1 :]:
        # A continuation is indented (a list item's) or plain text; a blank line, a new item or
        # a heading ends the paragraph.
        if not line.strip() or line.lstrip().startswith(("- ", "#", "|", "```")):
            break
        block.append(line.strip())
    return " ".join(block)


def names(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def test_the_demo_scenarios_are_the_code_s() -> None:
    item = paragraph(README.read_text(), "- `--demo list` lists the scenarios")
    listed = re.search(r"lists the scenarios \(([^)]*)\)", item)
    assert listed is not None, item
    assert names(listed[1]) == list(SCENARIOS), item


def test_the_phases_and_outcomes_are_the_code_s() -> None:
    text = paragraph(README.read_text(), "Phases:")
    phases, separator, outcomes = text.removeprefix("Phases:").partition("then the outcome:")
    assert separator, text
    outcome_values = [o.value for o in HealingOutcome]
    assert names(outcomes) == outcome_values, text
    in_progress = [p.value for p in HealingPhase if p.value not in outcome_values]
    assert names(phases) == in_progress, text
    # Every outcome is also the final phase of its healing.
    assert {o.phase for o in HealingOutcome} <= set(HealingPhase)
