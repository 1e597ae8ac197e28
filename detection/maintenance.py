"""Maintenance windows: when to act on a resource that is running out (issue 12, seed 001).

A service declares its windows in ``services.yaml`` (``maintenance_windows``: a weekly
recurrence in a time zone); ``occurrences`` turns one into concrete spans, and
``rank_windows`` scores the spans a healing could use:

- off-peak +30, resources free +20, -10 per conflicting healing or change;
- urgency: a window loses up to ``URGENCY_POINTS`` the later it starts in the time left before
  the expected crossing (a window that starts now loses nothing, one that starts just before
  the crossing loses them all);
- a window that ends after the expected crossing is *too late*: it ranks after acting now,
  whatever its score. Acting now is always an option (``act_now``), scored by the same rules.

Pure: no clock (``now`` is an argument), no I/O. The models are strict pydantic so that a
catalog's mistakes are refused with the field named.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from selfheal.domain.maintenance import (
    WEEKDAYS,
    MaintenanceWindow,
    Weekday,
    parse_duration,
)

__all__ = [
    "WEEKDAYS",
    "MaintenanceWindow",
    "Weekday",
    "parse_duration",
]

OFF_PEAK_POINTS = 30.0
RESOURCES_FREE_POINTS = 20.0
CONFLICT_POINTS = -10.0
URGENCY_POINTS = 30.0


def occurrences(
    window: MaintenanceWindow, after: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The spans of ``window`` that end after ``after`` and start before ``until`` (aware
    datetimes, returned in UTC), in order; local times follow daylight saving."""
    zone = ZoneInfo(window.timezone)
    hours, minutes = (int(part) for part in window.start.split(":"))
    length = timedelta(seconds=window.duration_s)
    first = after.astimezone(zone).date() - timedelta(days=8)
    last = until.astimezone(zone).date()
    spans = []
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in window.days:
            start = _local(day, hours, minutes, zone)
            end = start + length
            if end > after and start < until:
                spans.append((start, end))
        day += timedelta(days=1)
    return spans


def _local(day: date, hours: int, minutes: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hours, minutes), tzinfo=zone).astimezone(UTC)


class CandidateWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    start: datetime
    end: datetime
    off_peak: bool = False
    resources_free: bool = False
    conflicts: int = Field(default=0, ge=0, description="healings or changes at the same time")
    label: str = ""


class RankedWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    start: datetime
    end: datetime
    score: float
    too_late: bool
    reasons: list[str]


def rank_windows(
    candidates: Sequence[CandidateWindow],
    *,
    now: datetime,
    crossing_at: datetime | None,
    act_now: CandidateWindow | None = None,
) -> list[RankedWindow]:
    """The candidates and acting now, best first: timely options by score (then the earliest),
    then the windows that end after ``crossing_at``. Windows over before ``now`` are dropped; a
    window in progress starts ``now``. ``act_now`` describes acting immediately (default: an
    instant, not off-peak, resources not known to be free, no conflicts)."""
    now_option = act_now or CandidateWindow(start=now, end=now, label="now")
    ranked = [_score(now_option, now, crossing_at, immediate=True)]
    ranked += [_score(c, now, crossing_at) for c in candidates if c.end > now]
    return sorted(ranked, key=lambda r: (r.too_late, -r.score, r.start))


def _score(
    window: CandidateWindow,
    now: datetime,
    crossing_at: datetime | None,
    *,
    immediate: bool = False,
) -> RankedWindow:
    start = max(window.start, now)
    score = 0.0
    reasons = []
    if window.off_peak:
        score += OFF_PEAK_POINTS
        reasons.append(f"off-peak {OFF_PEAK_POINTS:+g}")
    if window.resources_free:
        score += RESOURCES_FREE_POINTS
        reasons.append(f"resources free {RESOURCES_FREE_POINTS:+g}")
    if window.conflicts:
        points = CONFLICT_POINTS * window.conflicts
        score += points
        reasons.append(f"{window.conflicts} conflicting healing(s) or change(s) {points:+g}")
    too_late = False
    if crossing_at is not None:
        left = (crossing_at - now).total_seconds()
        if window.end > crossing_at and not immediate:  # acting now is never too late
            too_late = True
            reasons.append(
                f"ends after the expected crossing at {crossing_at.astimezone(UTC):%Y-%m-%d %H:%M}"
                " UTC"
            )
        elif left > 0:
            used = min(max((start - now).total_seconds() / left, 0.0), 1.0)
            points = -URGENCY_POINTS * used
            score += points
            reasons.append(
                f"starts after {used:.0%} of the time left before the crossing {points:+.1f}"
            )
    label = window.label or (
        "now" if immediate else f"{start.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC"
    )
    return RankedWindow(
        label=label, start=start, end=window.end, score=round(score, 3), too_late=too_late,
        reasons=reasons,
    )  # fmt: skip
