"""The pure formatting of notifications: durations, links, bounded and escaped texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from selfheal.activities.notify import (
    _duration,
    _fit,
    _labels_that_matter,
    _lines,
    slack_blocks,
    summary_line,
    workflow_url,
)
from selfheal.domain import Fault, HealingOutcome, HealingPhase, HealingStatus

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def status(**update: object) -> HealingStatus:
    fault = Fault(service="demo", type="down", target="demo-target")
    base = HealingStatus(
        workflow_id=fault.workflow_id,
        run_id="run-1",
        phase=HealingPhase.ESCALATED,
        fault=fault,
        outcome=HealingOutcome.ESCALATED,
        started_at=T0,
    )
    return base.model_copy(update=update)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3900, "1h 5m"),
     (86400, "1d"), (90000, "1d 1h"), (-5, "0s")],
)  # fmt: skip
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def test_a_workflow_link_quotes_what_a_path_cannot_hold() -> None:
    assert workflow_url("http://ui:8233/", "prod ns", "heal-a:b", "r/1") == (
        "http://ui:8233/namespaces/prod%20ns/workflows/heal-a:b/r%2F1/history"
    )
    assert workflow_url("http://ui", "default", "heal-x", "") == (
        "http://ui/namespaces/default/workflows/heal-x"
    )


def test_a_cut_never_splits_an_entity() -> None:
    text = "a" * 8 + "&amp;" + "b" * 10
    for limit in range(9, 15):
        cut = _fit(text, limit)
        assert len(cut) <= limit
        assert cut.endswith("…")
        assert "&amp;" in cut or "&" not in cut
    assert _fit("short", 10) == "short"


def test_lines_that_do_not_fit_are_counted() -> None:
    text = _lines(["x" * 1000] * 5, limit=3000)
    assert len(text) <= 3000
    assert text.endswith("_… 3 more_")


def test_the_labels_that_say_where_come_first_and_internal_ones_not_at_all() -> None:
    labels = {"zone": "a", "pod": "p-1", "cache_prefix": "x", "alertname": "Down", "severity": "s"}
    assert _labels_that_matter(labels) == [("alertname", "Down"), ("pod", "p-1"), ("zone", "a")]


def test_a_reminder_without_approvers_says_anyone_may_approve() -> None:
    waiting = status(
        phase=HealingPhase.AWAITING_APPROVAL,
        outcome=None,
        awaiting_approval=True,
        awaiting_since=T0,
    )
    now = T0 + timedelta(hours=1, minutes=2)
    assert summary_line(waiting, "reminder", now=now) == (
        f":raising_hand: {waiting.workflow_id} awaits approval for 1h 2m: demo/down on "
        "demo-target — any approver"
    )
    header = slack_blocks(waiting, "reminder", now=now)[0]["text"]["text"]
    assert header == ":raising_hand: Awaits approval for 1h 2m: demo/down"


def test_without_a_ui_url_there_is_no_button() -> None:
    blocks = slack_blocks(status())
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    linked = slack_blocks(status(), link="http://ui/x")
    assert linked[-2] == {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open in Temporal UI"},
                "url": "http://ui/x",
                "action_id": "open_workflow",
            }
        ],
    }


def test_mentions_and_links_from_a_fault_are_escaped() -> None:
    noisy = status(outcome_detail="<!channel> <http://evil|click> & co")
    seen = str(slack_blocks(noisy)) + summary_line(noisy)
    assert "<!channel>" not in seen and "<http" not in seen
    assert "&lt;!channel&gt; &lt;http://evil|click&gt; &amp; co" in summary_line(noisy)
