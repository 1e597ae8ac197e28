"""``detection.forecast``: a resource that runs out is seen coming with its time of crossing; a
series that only wiggles (noise, seasons) is not."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from selfheal.detection.forecast import forecast
from selfheal.domain.errors import ConfigError

HOUR = 3600.0
DAY = 86_400.0
START = 1_700_006_400.0  # a midnight, UTC


def leak(
    seed: int, *, days: float = 6.0, ahead_days: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Memory with a daily cycle and noise, leaking 0.8 per hour from day 4: (times, values)
    of the first ``days``, then of the ``ahead_days`` that follow (the truth to compare with)."""
    rng = np.random.default_rng(seed)
    t = START + np.arange(0.0, (days + ahead_days) * DAY, 300.0)
    level = 40 + 3 * np.sin(2 * np.pi * (t - START) / DAY)
    level += 0.8 * np.maximum((t - START - 4 * DAY) / HOUR, 0.0)
    y = level + rng.normal(0, 1.0, len(t))
    past = t < START + days * DAY
    return t[past], y[past], t[~past], y[~past]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_leak_crosses_with_high_probability_near_the_true_time(seed: int) -> None:
    t, y, future_t, future_y = leak(seed)
    threshold = float(np.median(y[-12:])) + 12 * 0.8  # reached about 12 h ahead
    truth = float(future_t[np.argmax(future_y >= threshold)])  # the first point beyond it
    result = forecast(t, y, threshold=threshold)
    assert result.probability >= 0.7
    assert result.crossing_at is not None
    assert abs(result.crossing_at - truth) <= 2 * HOUR, (result.crossing_at - truth) / HOUR
    assert result.trend_per_hour == pytest.approx(0.8, rel=0.15)
    assert result.seasonal_period_s == DAY
    assert not result.already_crossed
    # the interval widens with the horizon
    widths = [p.upper - p.lower for p in result.path]
    assert widths == sorted(widths)
    assert widths[-1] > widths[0]
    assert all(p.lower <= p.mean <= p.upper for p in result.path)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_flat_noisy_series_below_the_threshold_is_not_predicted_to_cross(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = START + np.arange(0.0, 5 * DAY, 300.0)
    y = 50 + rng.normal(0, 2.0, len(t))
    result = forecast(t, y, threshold=50 + 5 * 2.0)
    assert result.probability < 0.3
    assert result.crossing_at is None
    assert abs(result.trend_per_hour) < 0.05


@pytest.mark.parametrize("seed", [7, 8])
def test_a_purely_seasonal_series_below_the_threshold_is_not_predicted_to_cross(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    t = START + np.arange(0.0, 6 * DAY, 600.0)
    y = 60 + 15 * np.sin(2 * np.pi * (t - START) / DAY) + rng.normal(0, 1.0, len(t))
    # forecast from the steepest rise of the day, where a straight line would cross soonest
    rising = t[t <= START + 5 * DAY + 0.2 * DAY]
    result = forecast(rising, y[: len(rising)], threshold=60 + 15 + 4.0)
    assert result.seasonal_period_s == DAY
    assert result.probability < 0.3
    peak = max(p.mean for p in result.path)
    assert 70 < peak < 79  # the profile carries the daily peak, below the threshold


def test_downwards_free_space_that_shrinks() -> None:
    rng = np.random.default_rng(9)
    t = START + np.arange(0.0, 3 * DAY, 600.0)
    free_gb = 200 - 2.0 * (t - START) / HOUR + rng.normal(0, 1.5, len(t))  # 2 GB/h
    # now ~56 GB free: 20 GB is reached in ~18 h
    result = forecast(t, free_gb, threshold=20, direction="down")
    assert result.direction == "down"
    assert result.probability >= 0.7
    assert result.trend_per_hour == pytest.approx(-2.0, rel=0.05)
    expected = START + (200 - 20) / 2.0 * HOUR
    assert result.crossing_at is not None
    assert abs(result.crossing_at - expected) <= HOUR
    assert result.path[-1].lower <= result.path[-1].mean <= result.path[-1].upper
    # the same series against an upward threshold is never crossed
    assert forecast(t, free_gb, threshold=250, direction="up").probability < 0.05


def test_a_certificate_expires_at_the_exact_time() -> None:
    t = START + np.arange(0.0, 20 * DAY, HOUR)
    days_left = 30 - (t - START) / DAY  # expires at START + 30 days
    result = forecast(t, days_left, threshold=7, direction="down", horizon_s=5 * DAY)
    assert result.probability == 1.0
    assert result.crossing_at == pytest.approx(START + 23 * DAY, abs=1.0)
    assert result.crossing_p10_at == pytest.approx(START + 23 * DAY, abs=1.0)
    assert result.trend_per_hour == pytest.approx(-1 / 24)
    assert result.noise < 1e-9
    # a horizon that ends before the crossing: certainly not within it
    short = forecast(t, days_left, threshold=7, direction="down", horizon_s=2 * DAY)
    assert short.probability == 0.0
    assert short.crossing_at is None


def test_already_beyond_the_threshold() -> None:
    t = START + np.arange(0.0, DAY, 600.0)
    y = 90 + 0.1 * np.sin(t)
    result = forecast(t, y, threshold=80)
    assert result.already_crossed
    assert result.probability == 1.0
    assert result.crossing_at == result.now


def test_gaps_repeats_disorder_and_non_finite_values_are_accepted() -> None:
    t, y, _, _ = leak(11)
    keep = ((t - START) % DAY > 6 * HOUR) | ((t - START) < DAY)  # a 6-hour hole every day
    t, y = t[keep], y[keep]
    clean = forecast(t, y, threshold=float(y[-1]) + 10)
    rng = np.random.default_rng(0)
    repeats = rng.choice(len(t), 40, replace=False)
    messy_t = np.concatenate([t, t[repeats], [t[3], np.nan]])
    messy_y = np.concatenate([y, y[repeats], [np.inf, 5.0]])
    order = rng.permutation(len(messy_t))
    messy = forecast(messy_t[order], messy_y[order], threshold=float(y[-1]) + 10)
    assert messy.points_used == len(t)
    assert messy.repeated_timestamps == 40
    assert messy.points_skipped == 2
    assert messy.probability == pytest.approx(clean.probability, abs=0.05)
    assert messy.trend_per_hour == pytest.approx(clean.trend_per_hour, rel=0.05)


def test_the_same_input_gives_the_same_forecast() -> None:
    t, y, _, _ = leak(12)
    first = forecast(t, y, threshold=float(y[-1]) + 8)
    assert forecast(t, y, threshold=float(y[-1]) + 8) == first


def test_a_later_now_moves_the_origin() -> None:
    t = START + np.arange(0.0, 2 * DAY, 600.0)
    y = (t - START) / HOUR  # 1 per hour
    result = forecast(t, y, threshold=60, now=float(t[-1]) + 6 * HOUR, horizon_s=12 * HOUR)
    assert result.now == t[-1] + 6 * HOUR
    assert result.crossing_at == pytest.approx(START + 60 * HOUR, abs=1.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": 1e200}, "threshold: expected a finite number within"),
        ({"threshold": 1.0, "horizon_s": 0.0}, "horizon"),
        ({"threshold": 1.0, "horizon_s": 3651 * DAY}, "horizon: .* at most 3650d"),
        ({"threshold": 1.0, "now": START}, "now"),
    ],
)
def test_bad_arguments_name_what_is_wrong(kwargs: dict[str, float], fragment: str) -> None:
    t = START + np.arange(0.0, DAY, 600.0)
    with pytest.raises(ConfigError, match=fragment):
        forecast(t, np.ones_like(t), **kwargs)  # type: ignore[arg-type]


def test_a_value_too_large_to_compute_with_is_skipped() -> None:
    """1e308 squared overflows: such a value is a corrupt row, dropped and counted, and the
    forecast is that of the rest (no nan, no overflow warning)."""
    t, y, _, _ = leak(13)
    clean = forecast(t, y, threshold=float(y[-1]) + 10)
    wild = y.copy()
    wild[len(y) // 2] = 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = forecast(t, wild, threshold=float(y[-1]) + 10)
    assert (result.points_used, result.points_skipped) == (len(t) - 1, 1)
    assert result.probability == pytest.approx(clean.probability, abs=0.05)
    assert math.isfinite(result.level) and math.isfinite(result.noise)


def test_points_centuries_apart_do_not_fill_memory() -> None:
    """A day of data and a few points thousands of years away: the seasonal grid over that span
    would hold billions of cells; it is not built (mostly gaps), and the forecast still runs."""
    t = START + np.arange(0.0, 3 * DAY, 600.0)
    far = np.array([-5e10, 2.5e11])  # the years 385 and 9892
    times = np.concatenate([far[:1], t, far[1:]])
    result = forecast(times, np.ones_like(times), threshold=2.0)
    assert result.points_used == len(times)
    assert result.seasonal_period_s is None


def test_too_few_points() -> None:
    with pytest.raises(ConfigError, match="at least"):
        forecast([START, START, START + 60], [1.0, 2.0, 3.0], threshold=10)
