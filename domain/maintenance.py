"""A service's maintenance windows (``services.yaml``: ``maintenance_windows``), and the
duration syntax the catalog and the CLI share (``900``, ``90m``, ``1.5h``, ``7d``).

Where a window falls and how windows rank for a predicted fault: ``detection/maintenance.py``.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_duration(text: str) -> float:
    """Seconds of ``900``, ``90m``, ``1.5h``, ``7d``; ValueError unless positive."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like 900, 15m or 1h; got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class MaintenanceWindow(BaseModel):
    """A weekly window: ``days`` at ``start`` (local time of ``timezone``) for ``duration``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: str = Field(description='local time "HH:MM"')
    duration: str = Field(description='"2h", "90m", "3600"')
    timezone: str = "UTC"
    off_peak: bool = Field(default=True, description="traffic is low during the window")

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object) -> object:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 2:30 as 150 (base 60)
            raise ValueError('write the time in quotes, e.g. "02:00"')
        if isinstance(value, str) and not _CLOCK.match(value):
            raise ValueError(f'expected a local time "HH:MM", got {value!r}')
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            if parse_duration(value) > 7 * 86_400:
                raise ValueError(f"{value!r} is longer than the week it recurs in")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected e.g. UTC or Europe/Paris"
            ) from None
        return value

    @property
    def duration_s(self) -> float:
        return parse_duration(self.duration)
