"""Maintenance windows: a weekly recurrence in a time zone, and the ranking of the spans a
healing could act in (off-peak, resources free, conflicts, urgency before a crossing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from pydantic import ValidationError

from selfheal.detection.maintenance import (
    CandidateWindow,
    MaintenanceWindow,
    occurrences,
    parse_duration,
    rank_windows,
)

NOW = datetime(2024, 3, 4, 12, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)


def window(start_h: float, hours: float = 2, **flags: object) -> CandidateWindow:
    return CandidateWindow(start=NOW + start_h * H, end=NOW + (start_h + hours) * H, **flags)  # type: ignore[arg-type]


def test_off_peak_and_free_resources_win_without_a_crossing() -> None:
    busy = window(2, conflicts=2, label="busy")
    quiet = window(14, off_peak=True, resources_free=True, label="quiet")
    peak = window(4, resources_free=True, label="peak")
    ranked = rank_windows([busy, quiet, peak], now=NOW, crossing_at=None)
    assert [r.label for r in ranked] == ["quiet", "peak", "now", "busy"]
    assert [r.score for r in ranked] == [50, 20, 0, -20]
    assert ranked[0].reasons == ["off-peak +30", "resources free +20"]
    assert not any(r.too_late for r in ranked)


def test_a_window_that_ends_after_the_crossing_is_never_chosen_over_acting_now() -> None:
    late = window(20, off_peak=True, resources_free=True, label="late")  # ends at +22 h
    ranked = rank_windows([late], now=NOW, crossing_at=NOW + 10 * H)
    assert [r.label for r in ranked] == ["now", "late"]
    assert ranked[1].too_late and ranked[1].score > ranked[0].score
    assert any("ends after the expected crossing" in reason for reason in ranked[1].reasons)


def test_urgency_prefers_the_earlier_of_two_equal_windows_and_grows_as_the_crossing_nears() -> None:
    early, later = window(1, off_peak=True, label="early"), window(7, off_peak=True, label="later")
    ranked = rank_windows([later, early], now=NOW, crossing_at=NOW + 10 * H)
    assert [r.label for r in ranked[:2]] == ["early", "later"]
    assert ranked[0].score == pytest.approx(30 - 30 * 0.1)
    assert ranked[1].score == pytest.approx(30 - 30 * 0.7)
    # a far crossing costs a window little; a near one a lot
    relaxed = rank_windows([later], now=NOW, crossing_at=NOW + 100 * H)
    assert relaxed[0].label == "later" and relaxed[0].score == pytest.approx(30 - 30 * 0.07)


def test_past_windows_are_dropped_and_a_window_in_progress_starts_now() -> None:
    past = window(-5, off_peak=True, label="past")
    ranked = rank_windows(
        [past, window(-1, off_peak=True, label="open")], now=NOW, crossing_at=None
    )
    assert [r.label for r in ranked] == ["open", "now"]
    assert ranked[0].start == NOW and ranked[0].end == NOW + H


def test_already_crossed_acting_now_comes_first() -> None:
    ranked = rank_windows([window(1, off_peak=True)], now=NOW, crossing_at=NOW - H)
    assert ranked[0].label == "now" and not ranked[0].too_late
    assert ranked[1].too_late


def test_a_window_from_yaml_and_its_occurrences_follow_daylight_saving() -> None:
    spec = MaintenanceWindow.model_validate(
        yaml.safe_load('days: [sat, sun]\nstart: "02:30"\nduration: 2h\ntimezone: Europe/Paris')
    )
    assert spec.duration_s == 7200
    spans = occurrences(spec, datetime(2024, 3, 29, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    # Sat 30 March 02:30 CET is 01:30 UTC; Sun 31 March is the switch to CEST (02:30 does not
    # exist locally; zoneinfo reads it as CET, 01:30 UTC); a week later 02:30 CEST is 00:30 UTC
    assert [s for s, _ in spans] == [
        datetime(2024, 3, 30, 1, 30, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
    ]
    later = occurrences(spec, datetime(2024, 4, 6, tzinfo=UTC), datetime(2024, 4, 7, tzinfo=UTC))
    assert [s for s, _ in later] == [datetime(2024, 4, 6, 0, 30, tzinfo=UTC)]
    assert all(end - start == timedelta(hours=2) for start, end in spans)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("start: 2:30\nduration: 2h", 'in quotes, e.g. "02:00"'),
        ('start: "25:00"\nduration: 2h', "HH:MM"),
        ('start: "02:00"\nduration: soon', "positive duration"),
        ('start: "02:00"\nduration: 8d', "longer than the week"),
        ('start: "02:00"\nduration: 2h\ntimezone: Mars/Base', "unknown time zone"),
        ('start: "02:00"\nduration: 2h\ndays: [monday]', "days.0"),
        ('start: "02:00"\nduration: 2h\nwhen: never', "Extra inputs"),
    ],
)
def test_a_bad_window_names_its_field(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        MaintenanceWindow.model_validate(yaml.safe_load(text))


def test_durations() -> None:
    assert [parse_duration(t) for t in ("3600", "90m", "1.5h", "7d", "30s")] == [
        3600, 5400, 5400, 604800, 30,
    ]  # fmt: skip
    for bad in ("0", "-1h", "2 weeks", ""):
        with pytest.raises(ValueError, match="positive duration"):
            parse_duration(bad)
