"""When does a resource run out? A trend-and-seasonality forecast of one series, the probability
that it crosses a threshold within a horizon, and the expected time of crossing.

Pure (numpy, no I/O). ``forecast(times, values, threshold=...)`` takes points as they come —
unsorted, with repeated timestamps, gaps and non-finite values — and returns a ``Forecast``.
Method (docs/forecasting.md):

1. **Clean.** Non-finite points, and values beyond ±``LARGEST_VALUE`` (corrupt rows), are
   dropped and counted; points are sorted by time and the
   values of a repeated timestamp averaged. A threshold crossed *downwards* (free bytes,
   certificate days left) is the same problem on the negated series.
2. **Seasonality.** A daily and, when the data spans two weeks, a weekly profile are tried, each
   only over at least two full periods: the series is averaged on a grid of
   ``period / bins``, detrended by a centred moving average of one period (which follows a
   level that changes, such as a leak starting), and the median per phase is the profile. It is
   kept when it explains at least ``SEASONAL_MIN_R2`` of the detrended variance (adjusted for
   its number of bins, so noise alone does not pass); the better of the two wins.
3. **Trend.** A robust (Huber) straight line through the deseasonalised points of a recent
   window. The window is chosen by the intersection of confidence intervals: windows grow
   geometrically from ``horizon / 4`` (and at least ``MIN_WINDOW_POINTS``), and the longest is
   kept whose slope interval still meets every shorter window's — a long flat history does not
   hide a leak that began yesterday, and a flat series uses all its points.
4. **Uncertainty.** The residuals' robust spread (MAD) and lag-1 autocorrelation give the
   noise of an observation (an AR(1) process) and the covariance of level and slope, inflated by
   the autocorrelation (fewer independent points than points). The prediction interval
   (``INTERVAL``, normal) widens with the horizon: slope uncertainty grows with it linearly.
5. **Crossing.** ``SAMPLES`` paths (fixed seed: the same input gives the same answer) draw the
   level and slope from their distribution and the AR(1) noise step by step on a grid of at most
   ``MAX_STEPS`` steps (never finer than the data). The probability is the share of paths whose
   *observations* reach the threshold within the horizon; each path's first passage is
   interpolated between grid steps, and the expected crossing is their median (exact for a
   noiseless straight line such as a certificate's days left), ``crossing_p10_at`` and
   ``crossing_p90_at`` their 10th and 90th percentiles. A noisy series crosses a little before
   its level does: the first observation beyond the threshold is what an alert would see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from selfheal.domain.errors import ConfigError
from selfheal.domain.forecast import LARGEST_VALUE, MAX_HORIZON_S, threshold_problem

Direction = Literal["up", "down"]
Array = npt.NDArray[np.float64]

DEFAULT_HORIZON_S = 86_400.0
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
SEASONS = ((DAY_S, 24), (WEEK_S, 168))
"""(period, bins): hourly profiles of a day and of a week"""
SEASONAL_MIN_R2 = 0.2
"""adjusted share of the detrended variance a seasonal profile must explain"""
MIN_POINTS = 6
MIN_WINDOW_POINTS = 12
WINDOW_GROWTH = 1.5
ICI_WIDTH = 2.0
"""half-width of a slope's confidence interval, in standard errors, for choosing the window"""
HUBER_K = 1.345
MAX_STEPS = 288
SAMPLES = 1000
SEED = 20240601
INTERVAL = 0.8
PATH_POINTS = 8
_MAD_TO_SIGMA = 1.4826
_Z_INTERVAL = NormalDist().inv_cdf(0.5 + INTERVAL / 2)


class ForecastPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float = Field(description="unix seconds")
    mean: float
    lower: float = Field(description="lower end of the prediction interval (INTERVAL)")
    upper: float


class Forecast(BaseModel):
    """A series' forecast against a threshold; times are unix seconds, values in the series'
    own units and direction."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    direction: Direction
    horizon_s: float
    now: float = Field(description="where the forecast starts: the last point, or `now`")
    probability: float = Field(description="of reaching the threshold within the horizon")
    crossing_at: float | None = Field(
        description="when the expected path reaches the threshold (None: not within the horizon)"
    )
    crossing_p10_at: float | None = Field(
        description="10 % of the paths have crossed by then (None: fewer cross)"
    )
    crossing_p90_at: float | None = Field(description="90 % of the paths have crossed by then")
    already_crossed: bool = Field(description="the current level is beyond the threshold")
    level: float = Field(description="the expected value now")
    trend_per_hour: float
    seasonal_period_s: float | None
    trend_window_s: float = Field(description="the recent span the trend was fitted on")
    noise: float = Field(description="robust standard deviation of an observation")
    interval: float = INTERVAL
    points_used: int
    points_skipped: int = Field(
        description="points not used: non-finite times or values, values beyond ±1e150, and "
        "(from `selfheal forecast`) the file's rows that could not be read"
    )
    repeated_timestamps: int = Field(description="points merged into an earlier timestamp")
    path: list[ForecastPoint]

    @property
    def crossing_in_s(self) -> float | None:
        return None if self.crossing_at is None else self.crossing_at - self.now


@dataclass(frozen=True)
class _Season:
    period_s: float
    bin_s: float
    profile: Array
    r2: float

    def at(self, times: Array) -> Array:
        """The profile at ``times``, linear between bin centres, around the clock."""
        bins = len(self.profile)
        position = (times / self.bin_s - 0.5) % bins
        low = np.floor(position).astype(np.int64)
        frac = position - low
        high = (low + 1) % bins
        return np.asarray(self.profile[low] * (1 - frac) + self.profile[high] * frac)


@dataclass(frozen=True)
class _Line:
    """A line through (t - end, x): ``level + slope * (t - end)``."""

    level: float
    slope: float
    cov: Array
    """covariance of (level, slope), inflated for autocorrelation"""
    sigma: float
    rho: float
    """lag-1 autocorrelation of the residuals, per data step"""
    last_residual: float
    window_s: float
    n: int


def forecast(
    times: Sequence[float] | Array,
    values: Sequence[float] | Array,
    *,
    threshold: float,
    horizon_s: float = DEFAULT_HORIZON_S,
    direction: Direction = "up",
    now: float | None = None,
) -> Forecast:
    """Forecast ``values`` at ``times`` (unix seconds) over ``horizon_s`` from ``now`` (default:
    the last point) against ``threshold``, reached from below (``up``) or above (``down``).
    Raises ``ConfigError`` naming the argument when there is too little to forecast from."""
    problem = threshold_problem(threshold)
    if problem is not None:
        raise ConfigError(f"threshold: {problem}")
    if not (math.isfinite(horizon_s) and 0 < horizon_s <= MAX_HORIZON_S):
        raise ConfigError(
            f"horizon: expected a positive duration of at most {MAX_HORIZON_S / DAY_S:g}d, "
            f"got {horizon_s!r} s"
        )
    if direction not in ("up", "down"):
        raise ConfigError(f"direction: expected 'up' or 'down', got {direction!r}")
    t_all = np.asarray(times, dtype=np.float64)
    y_all = np.asarray(values, dtype=np.float64)
    if t_all.shape != y_all.shape or t_all.ndim != 1:
        raise ConfigError("values: expected as many values as times")
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(t_all) & (np.abs(y_all) <= LARGEST_VALUE)
    skipped = int(len(t_all) - finite.sum())
    t, y, repeated = _merge_repeats(t_all[finite], y_all[finite])
    if len(t) < MIN_POINTS:
        raise ConfigError(
            f"values: {len(t)} usable points at distinct times; a forecast needs at least "
            f"{MIN_POINTS}"
        )
    end = float(t[-1])
    origin = end if now is None else float(now)
    if not math.isfinite(origin) or origin < end:
        raise ConfigError(f"now: expected a time at or after the last point ({end:.0f})")
    sign = 1.0 if direction == "up" else -1.0
    y = sign * y
    level_threshold = sign * threshold
    step = float(np.median(np.diff(t)))

    season = _seasonality(t, y, step)
    seasonal = season.at(t) if season is not None else np.zeros_like(y)
    line = _trend(t - end, y - seasonal, step, horizon_s)

    paths, offsets, mean = _simulate(line, season, origin, end, step, horizon_s)
    first_at = _first_passages(paths, origin, offsets, level_threshold)
    probability = float(np.isfinite(first_at).mean())
    crossing, p10, p90 = (
        float(np.quantile(first_at, q, method="inverted_cdf")) for q in (0.5, 0.1, 0.9)
    )
    now_mean = float(mean[0])

    picks = np.unique(np.linspace(0, len(offsets) - 1, PATH_POINTS + 1).round().astype(int)[1:])
    ahead = offsets[picks] + (origin - end)
    spread = _Z_INTERVAL * np.sqrt(_variance(line, ahead, step))
    centre = mean[picks + 1]
    lower, upper = centre - spread, centre + spread
    path = [
        ForecastPoint(
            at=origin + float(offsets[k]),
            mean=sign * float(mean[k + 1]),
            lower=float(min(sign * lo, sign * hi)),
            upper=float(max(sign * lo, sign * hi)),
        )
        for k, lo, hi in zip(picks, lower, upper, strict=True)
    ]
    return Forecast(
        threshold=threshold,
        direction=direction,
        horizon_s=horizon_s,
        now=origin,
        probability=probability,
        crossing_at=crossing if math.isfinite(crossing) else None,
        crossing_p10_at=p10 if math.isfinite(p10) else None,
        crossing_p90_at=p90 if math.isfinite(p90) else None,
        already_crossed=now_mean >= level_threshold,
        level=sign * now_mean,
        trend_per_hour=sign * line.slope * 3600.0,
        seasonal_period_s=season.period_s if season is not None else None,
        trend_window_s=line.window_s,
        noise=line.sigma,
        points_used=len(t),
        points_skipped=skipped,
        repeated_timestamps=repeated,
        path=path,
    )


# ----------------------------------------------------------------------------- the steps


def _merge_repeats(t: Array, y: Array) -> tuple[Array, Array, int]:
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    unique, index, counts = np.unique(t, return_inverse=True, return_counts=True)
    if len(unique) == len(t):
        return t, y, 0
    sums = np.bincount(index, weights=y)
    return unique, sums / counts, int(len(t) - len(unique))


def _seasonality(t: Array, y: Array, step: float) -> _Season | None:
    best: _Season | None = None
    span = float(t[-1] - t[0])
    for period, bins in SEASONS:
        if span < 2 * period:
            continue
        bins = min(bins, int(period // step))
        if bins < 4:
            continue
        season = _profile(t, y, period, bins)
        if season is not None and (best is None or season.r2 > best.r2):
            best = season
    return best


def _profile(t: Array, y: Array, period: float, bins: int) -> _Season | None:
    width = period / bins
    cell = np.floor(t / width).astype(np.int64)
    first = int(cell[0])
    index = cell - first
    size = int(index[-1]) + 1
    if size > 16 * max(len(t), bins):
        return None  # mostly gaps: no profile to find, and a grid that size could fill memory
    counts = np.bincount(index, minlength=size).astype(np.float64)
    sums = np.bincount(index, weights=y, minlength=size)
    grid = np.full(size, np.nan)
    filled = counts > 0
    grid[filled] = sums[filled] / counts[filled]
    # the level: a centred moving average over one period (of the cells that have data),
    # continued into the half periods at both ends by a line through the nearest period of it
    valid = np.isfinite(grid)
    padded = np.where(valid, grid, 0.0)
    kernel = np.ones(bins)
    total = np.convolve(padded, kernel, mode="same")
    present = np.convolve(valid.astype(np.float64), kernel, mode="same")
    centred = present >= bins / 2
    half = bins // 2
    centred[:half] = False
    centred[size - half :] = False
    cells = np.arange(size, dtype=np.float64)
    known = np.nonzero(centred)[0]
    if len(known) < 2 or valid.sum() < 2 * bins:
        return None
    level = np.full(size, np.nan)
    level[known] = total[known] / present[known]
    for edge, outside in ((known[:bins], cells < known[0]), (known[-bins:], cells > known[-1])):
        slope, intercept = np.polyfit(cells[edge], level[edge], 1)
        level[outside] = intercept + slope * cells[outside]
    usable = valid & np.isfinite(level)
    detrended = grid[usable] - level[usable]
    phase = (np.arange(size)[usable] + first) % bins
    profile = np.full(bins, np.nan)
    for k in range(bins):
        members = detrended[phase == k]
        if len(members) >= 2:
            profile[k] = float(np.median(members))
    estimated = np.isfinite(profile)
    if estimated.sum() < 0.75 * bins:
        return None
    if not estimated.all():
        positions = np.arange(bins)
        profile = np.interp(positions, positions[estimated], profile[estimated], period=bins)
    profile = profile - profile.mean()
    n = len(detrended)
    sst = float(np.sum((detrended - detrended.mean()) ** 2))
    sse = float(np.sum((detrended - profile[phase]) ** 2))
    if sst <= 0.0 or n < 2 * bins:
        return None
    r2 = 1.0 - (sse / (n - bins)) / (sst / (n - 1))
    if r2 < SEASONAL_MIN_R2:
        return None
    return _Season(period, width, profile, r2)


def _trend(dt: Array, x: Array, step: float, horizon_s: float) -> _Line:
    """The ICI choice among robust lines over growing recent windows (``dt``: time before the
    last point, <= 0)."""
    span = float(-dt[0])
    shortest = max(horizon_s / 4, MIN_WINDOW_POINTS * step)
    windows: list[float] = []
    width = shortest
    while width < span:
        windows.append(width)
        width *= WINDOW_GROWTH
    windows.append(span)
    chosen: _Line | None = None
    low, high = -math.inf, math.inf
    for width in windows:
        inside = dt >= -width - 1e-9
        if inside.sum() < min(MIN_WINDOW_POINTS, len(dt)):
            continue
        line = _robust_line(dt[inside], x[inside], width)
        se = math.sqrt(max(float(line.cov[1, 1]), 0.0))
        low = max(low, line.slope - ICI_WIDTH * se)
        high = min(high, line.slope + ICI_WIDTH * se)
        if chosen is not None and low > high:
            break
        chosen = line
    if chosen is None:  # fewer points than a window needs: all of them
        chosen = _robust_line(dt, x, span)
    return chosen


def _robust_line(dt: Array, x: Array, window_s: float) -> _Line:
    weights = np.ones_like(x)
    level = slope = 0.0
    residuals = x
    for _ in range(4):
        level, slope = _weighted_fit(dt, x, weights)
        residuals = x - (level + slope * dt)
        scale = _spread(residuals)
        if scale <= 0.0:
            break
        u = np.abs(residuals) / (HUBER_K * scale)
        weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
    sigma = _spread(residuals)
    n = len(x)
    rho = 0.0
    if n > 2 and sigma > 0.0:
        centred = residuals - residuals.mean()
        denominator = float(np.dot(centred, centred))
        if denominator > 0.0:
            rho = float(np.dot(centred[1:], centred[:-1]) / denominator)
    rho = min(max(rho, 0.0), 0.99)
    n_eff = max(n * (1 - rho) / (1 + rho), 2.0)
    mean_t = float(dt.mean())
    sxx = float(np.sum((dt - mean_t) ** 2))
    inflate = sigma**2 * n / n_eff
    if sxx > 0.0:
        var_slope = inflate / sxx
        var_level = inflate * (1 / n + mean_t**2 / sxx)
        cov = -inflate * mean_t / sxx
    else:
        var_slope, var_level, cov = 0.0, inflate / n, 0.0
    last = float(np.clip(residuals[-1], -3 * sigma, 3 * sigma))
    return _Line(
        level=level,
        slope=slope,
        cov=np.array([[var_level, cov], [cov, var_slope]]),
        sigma=sigma,
        rho=rho,
        last_residual=last,
        window_s=window_s,
        n=n,
    )


def _weighted_fit(dt: Array, x: Array, w: Array) -> tuple[float, float]:
    total = float(w.sum())
    mean_t = float(np.dot(w, dt)) / total
    mean_x = float(np.dot(w, x)) / total
    sxx = float(np.dot(w, (dt - mean_t) ** 2))
    slope = float(np.dot(w, (dt - mean_t) * (x - mean_x))) / sxx if sxx > 0.0 else 0.0
    return mean_x - slope * mean_t, slope


def _spread(residuals: Array) -> float:
    """Robust standard deviation: MAD x 1.4826, or the RMS when most residuals are equal."""
    mad = float(np.median(np.abs(residuals - np.median(residuals))))
    if mad > 0.0:
        return _MAD_TO_SIGMA * mad
    return float(np.sqrt(np.mean(residuals**2)))


def _simulate(
    line: _Line, season: _Season | None, origin: float, end: float, step: float, horizon_s: float
) -> tuple[Array, Array, Array]:
    """(paths with the value at ``origin`` first, offsets of the steps after it from
    ``origin``, the mean path with ``origin`` first)."""
    steps = max(1, min(MAX_STEPS, math.ceil(horizon_s / step)))
    grid = horizon_s / steps
    offsets = grid * np.arange(1, steps + 1, dtype=np.float64)
    ahead = np.concatenate(([0.0], offsets)) + (origin - end)
    moments = end + ahead
    seasonal = season.at(moments) if season is not None else np.zeros_like(moments)
    decay = line.rho ** (ahead / step)
    mean = line.level + line.slope * ahead + seasonal + line.last_residual * decay

    rng = np.random.default_rng(SEED)
    draws = rng.standard_normal((SAMPLES, 2)) @ _cholesky(line.cov).T
    paths = mean + draws[:, :1] + draws[:, 1:] * ahead
    if line.sigma > 0.0:
        # AR(1) noise around the mean path, which already holds the last residual's decay: its
        # variance at ``a`` ahead of the last point is sigma^2 (1 - rho^(2 a / step))
        rho = line.rho ** (grid / step)
        innovation = line.sigma * math.sqrt(1.0 - rho**2)
        shocks = rng.standard_normal((SAMPLES, steps))
        start = line.rho ** (ahead[1] / step)
        noise = shocks[:, 0] * line.sigma * math.sqrt(1.0 - start**2)
        paths[:, 1] += noise
        for k in range(1, steps):
            noise = rho * noise + shocks[:, k] * innovation
            paths[:, k + 1] += noise
    return paths, offsets, mean


def _variance(line: _Line, ahead: Array, step: float) -> Array:
    """Variance of an observation ``ahead`` of the last point: level and slope uncertainty
    plus the AR(1) noise not yet forgotten."""
    cov = line.cov
    parameters = cov[0, 0] + 2 * cov[0, 1] * ahead + cov[1, 1] * ahead**2
    noise = line.sigma**2 * (1.0 - line.rho ** (2 * ahead / step))
    return np.asarray(np.maximum(parameters, 0.0) + noise)


def _cholesky(cov: Array) -> Array:
    """Lower factor of a 2x2 covariance that may be singular (a noiseless series)."""
    a = math.sqrt(max(float(cov[0, 0]), 0.0))
    b = float(cov[1, 0]) / a if a > 0.0 else 0.0
    c = math.sqrt(max(float(cov[1, 1]) - b * b, 0.0))
    return np.array([[a, 0.0], [b, c]])


def _first_passages(paths: Array, origin: float, offsets: Array, threshold: float) -> Array:
    """When each path first reaches ``threshold``, linear between grid steps (``inf``: never
    within the horizon). ``paths[:, 0]`` is the value at ``origin``."""
    reached = paths >= threshold
    crossed = reached.any(axis=1)
    k = reached.argmax(axis=1)  # first index at or beyond; 0: already at the origin
    rows = np.arange(len(paths))
    after = paths[rows, k]
    before = paths[rows, np.maximum(k - 1, 0)]
    times = np.concatenate(([0.0], offsets))
    t_after = times[k]
    t_before = times[np.maximum(k - 1, 0)]
    rise = after - before
    fraction = np.divide(threshold - before, rise, out=np.ones_like(rise), where=rise > 0)
    at = origin + t_before + np.clip(fraction, 0.0, 1.0) * (t_after - t_before)
    return np.where(crossed, at, math.inf)
