"""Online anomaly detectors: one number in, one anomaly score in [0, 1] out.

A detector is anything with ``update(timestamp, value) -> score``. A point's score depends only
on that point and earlier ones, and every detector keeps bounded state (its window). Scores share
one scale: 0.5 is the detector's own natural threshold (z = ``sigma``, phi = ``threshold``, a drop
of ``drop``, a duration at the adaptive timeout), so one score threshold (0.5 by default) reads
the same for every detector, and scores grow smoothly towards 1 beyond it.

``DETECTORS`` is the registry (name → params model and factory), built here and nowhere else;
``SeriesBank`` holds one detector per series with least-recently-used eviction.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["up", "down", "both"]


class Detector(Protocol):
    def update(self, timestamp: float, value: float) -> float:
        """Score the point (``value`` finite, ``timestamp`` in seconds), then learn from it."""
        ...


def squash(ratio: float) -> float:
    """Map a statistic over its threshold to [0, 1]: 0 → 0, 1 → 0.5, 2 → 0.94."""
    if ratio <= 0.0:
        return 0.0
    return 1.0 - math.pow(2.0, -min(ratio * ratio, 1100.0))


def _signed(deviation: float, direction: Direction) -> float:
    if direction == "up":
        return deviation
    if direction == "down":
        return -deviation
    return abs(deviation)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EwmaParams(_Params):
    alpha: float = Field(default=0.1, gt=0, le=1, description="weight of the newest point")
    sigma: float = Field(default=3.0, gt=0, description="deviations from the EWMA scored 0.5")
    direction: Direction = "both"
    min_points: int = Field(default=10, ge=1, description="points learnt before any score")
    min_std: float = Field(default=0.0, ge=0, description="absolute floor of the deviation")
    min_rel_std: float = Field(default=0.01, ge=0, description="floor as a share of |mean|")
    clip: float | None = Field(
        default=None,
        gt=0,
        description="learn a point at most this many deviations away: a burst keeps scoring "
        "high for a while instead of being learnt at once",
    )


class Ewma:
    """Exponentially weighted mean and variance: for rates (error ratios, request rates)."""

    __slots__ = ("_mean", "_n", "_p", "_var")

    def __init__(self, params: EwmaParams | None = None) -> None:
        self._p = params or EwmaParams()
        self._n = 0
        self._mean = 0.0
        self._var = 0.0

    def update(self, timestamp: float, value: float) -> float:
        p = self._p
        score = 0.0
        if self._n >= p.min_points:
            std = max(math.sqrt(self._var), p.min_std, p.min_rel_std * abs(self._mean), 1e-12)
            score = squash(_signed(value - self._mean, p.direction) / std / p.sigma)
            if p.clip is not None:
                value = min(max(value, self._mean - p.clip * std), self._mean + p.clip * std)
        if self._n == 0:
            self._mean = value
        else:
            diff = value - self._mean
            step = p.alpha * diff
            self._mean += step
            self._var = (1.0 - p.alpha) * (self._var + diff * step)
        self._n += 1
        return score


class ZScoreParams(_Params):
    window: int = Field(default=60, ge=2, le=100_000, description="points in the rolling window")
    sigma: float = Field(default=3.0, gt=0, description="z scored 0.5")
    direction: Direction = "both"
    min_points: int = Field(default=10, ge=2, description="points in the window before scoring")
    min_std: float = Field(default=0.0, ge=0, description="absolute floor of the deviation")
    min_rel_std: float = Field(default=0.01, ge=0, description="floor as a share of |mean|")


class ZScore:
    """Rolling z-score over the last ``window`` points: for latencies."""

    __slots__ = ("_p", "_shift", "_sum", "_sumsq", "_values")

    def __init__(self, params: ZScoreParams | None = None) -> None:
        self._p = params or ZScoreParams()
        self._values: deque[float] = deque()
        # Sums of (x - shift) rather than of x: the variance of large values (epoch seconds,
        # byte counts) would otherwise cancel to noise.
        self._shift = 0.0
        self._sum = 0.0
        self._sumsq = 0.0

    def update(self, timestamp: float, value: float) -> float:
        p = self._p
        values = self._values
        n = len(values)
        score = 0.0
        if n >= p.min_points:
            mean = self._sum / n
            var = max(self._sumsq / n - mean * mean, 0.0)
            mean += self._shift
            std = max(math.sqrt(var), p.min_std, p.min_rel_std * abs(mean), 1e-12)
            score = squash(_signed(value - mean, p.direction) / std / p.sigma)
        if n == 0:
            self._shift = value
        x = value - self._shift
        values.append(x)
        self._sum += x
        self._sumsq += x * x
        if len(values) > p.window:
            old = values.popleft()
            self._sum -= old
            self._sumsq -= old * old
        return score


class ThroughputDropParams(_Params):
    alpha: float = Field(default=0.05, gt=0, le=1, description="weight of the newest point")
    drop: float = Field(default=0.5, gt=0, le=1, description="share below baseline scored 0.5")
    min_points: int = Field(default=10, ge=1, description="points learnt before any score")
    min_baseline: float = Field(
        default=0.0, ge=0, description="below this baseline nothing is scored (idle services)"
    )


class ThroughputDrop:
    """A fall of a rate (requests/s) below its slow EWMA baseline; rises score 0."""

    __slots__ = ("_baseline", "_n", "_p")

    def __init__(self, params: ThroughputDropParams | None = None) -> None:
        self._p = params or ThroughputDropParams()
        self._n = 0
        self._baseline = 0.0

    def update(self, timestamp: float, value: float) -> float:
        p = self._p
        score = 0.0
        base = self._baseline
        if self._n >= p.min_points and base > 0.0 and base >= p.min_baseline:
            score = squash((base - value) / base / p.drop)
        self._baseline = value if self._n == 0 else base + p.alpha * (value - base)
        self._n += 1
        return score


class PhiAccrualParams(_Params):
    """Akka's defaults (akka.cluster.failure-detector), in seconds."""

    threshold: float = Field(default=8.0, gt=0, description="phi scored 0.5 and suspected")
    max_sample_size: int = Field(default=1000, ge=1, le=100_000)
    min_std_deviation: float = Field(default=0.1, gt=0)
    acceptable_heartbeat_pause: float = Field(default=3.0, ge=0)
    first_heartbeat_estimate: float = Field(default=1.0, gt=0)


class PhiAccrual:
    """The phi accrual failure detector (Hayashibara et al.) exactly as Akka computes it.

    ``update`` is a heartbeat at ``timestamp`` (``value`` is ignored) and scores how late it came;
    ``phi(now)`` is the suspicion that the component is gone while it stays silent.
    """

    __slots__ = ("_intervals", "_last", "_p", "_sum", "_sumsq")

    def __init__(self, params: PhiAccrualParams | None = None) -> None:
        self._p = params or PhiAccrualParams()
        self._last: float | None = None
        self._intervals: deque[float] = deque()
        self._sum = 0.0
        self._sumsq = 0.0

    def _record(self, interval: float) -> None:
        self._intervals.append(interval)
        self._sum += interval
        self._sumsq += interval * interval
        if len(self._intervals) > self._p.max_sample_size:
            old = self._intervals.popleft()
            self._sum -= old
            self._sumsq -= old * old

    def phi(self, now: float) -> float:
        """Suspicion at ``now``: 0 before the first heartbeat (Akka: unmanaged is healthy)."""
        if self._last is None:
            return 0.0
        n = len(self._intervals)
        mean = self._sum / n
        std = math.sqrt(max(self._sumsq / n - mean * mean, 0.0))
        return phi(
            now - self._last,
            mean + self._p.acceptable_heartbeat_pause,
            max(std, self._p.min_std_deviation),
        )

    def is_available(self, now: float) -> bool:
        return self.phi(now) < self._p.threshold

    def score(self, now: float) -> float:
        return squash(self.phi(now) / self._p.threshold)

    def update(self, timestamp: float, value: float = 0.0) -> float:
        if self._last is None:
            # Akka seeds the history with two intervals around the expected one.
            estimate = self._p.first_heartbeat_estimate
            self._record(estimate - estimate / 4)
            self._record(estimate + estimate / 4)
            self._last = timestamp
            return 0.0
        if timestamp <= self._last:
            # A duplicate or reordered heartbeat says nothing new; a negative interval in the
            # history would corrupt the statistics.
            return 0.0
        score = self.score(timestamp)
        # The first heartbeat after a failure is left out of the history: its long pause
        # would skew the statistics (as in Akka).
        if self.is_available(timestamp):
            self._record(timestamp - self._last)
        self._last = timestamp
        return score


def phi(elapsed: float, mean: float, std: float) -> float:
    """Akka's logistic approximation of -log10(1 - CDF(elapsed)) for a normal (mean, std)."""
    y = (elapsed - mean) / std
    exponent = -y * (1.5976 + 0.070566 * y * y)
    e = math.exp(exponent) if exponent < 700.0 else math.inf
    if elapsed > mean:
        return -math.log10(e / (1.0 + e)) if e > 0.0 else math.inf
    return -math.log10(1.0 - 1.0 / (1.0 + e))


class AdaptiveTimeoutParams(_Params):
    window: int = Field(default=100, ge=2, le=100_000, description="recent durations kept")
    percentile: float = Field(default=99.0, gt=0, le=100)
    multiplier: float = Field(default=1.5, ge=1, description="timeout = percentile * this")
    min_points: int = Field(default=10, ge=2, description="durations learnt before any score")


class AdaptiveTimeout:
    """A duration over a percentile of recent durations (times a margin): jobs, probes, calls.

    Scored 0 at the median, 0.5 at the timeout; ``timeout()`` is the current limit.
    """

    __slots__ = ("_p", "_recent", "_sorted")

    def __init__(self, params: AdaptiveTimeoutParams | None = None) -> None:
        self._p = params or AdaptiveTimeoutParams()
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def _quantile(self, q: float) -> float:
        ordered = self._sorted
        rank = (len(ordered) - 1) * q / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    def timeout(self) -> float | None:
        """The current timeout; None until ``min_points`` durations are known."""
        if len(self._sorted) < self._p.min_points:
            return None
        return self._quantile(self._p.percentile) * self._p.multiplier

    def update(self, timestamp: float, value: float) -> float:
        limit = self.timeout()
        score = 0.0
        if limit is not None:
            median = self._quantile(50.0)
            score = squash((value - median) / max(limit - median, 1e-12))
        self._recent.append(value)
        bisect.insort(self._sorted, value)
        if len(self._recent) > self._p.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        return score


_SQRT2 = math.sqrt(2.0)


def surprise(z: float, decades: float = 10.0) -> float:
    """How unlikely a gaussian deviation of ``z`` sigmas (one tail) is, on [0, 1]:
    ``-log10(Q(z)) / decades``, so 0.5 is a tail probability of 10**-(decades / 2)."""
    if z <= 0.0:
        return 0.0
    tail = 0.5 * math.erfc(z / _SQRT2)
    if tail <= 0.0:
        return 1.0
    return min(1.0, -math.log10(tail) / decades)


class LikelihoodParams(_Params):
    alpha: float = Field(
        default=0.001, gt=0, le=1, description="weight of the newest value in its mean and variance"
    )
    short: int = Field(default=3, ge=1, le=100, description="surprises averaged short-term")
    likelihood_alpha: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="weight of the newest short-term surprise in their long-term mean and variance",
    )
    min_points: int = Field(default=50, ge=2, description="values learnt before any surprise")
    warmup: int = Field(default=150, ge=2, description="points learnt before any score")
    hold: int = Field(
        default=100,
        ge=0,
        description="after a score of 0.5 or more, points scored 0 (one alert per episode)",
    )
    direction: Direction = "both"
    season: float = Field(
        default=86_400.0,
        ge=0,
        description="seconds of the seasonal period (a day); 0: no seasonal model",
    )
    slots: int = Field(
        default=24, ge=1, le=1440, description="slots of the period (24: hours of the day)"
    )
    slot_alpha: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="floor of the weight of the newest point in its slot's mean",
    )
    slot_min_points: int = Field(
        default=5, ge=1, description="points a slot learns before its residuals are scored"
    )
    season_warmup: float = Field(
        default=2.0, ge=0, description="periods of history before the seasonal model may score"
    )
    range_margin: float | None = Field(
        default=0.05,
        ge=0,
        description=(
            "a value beyond the range of every earlier value by more than this share of that "
            "range scores 1 (HTM's spatial anomaly); null: off"
        ),
    )
    recurrence_tolerance: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description=(
            "an episode that follows the latest one of similar size by an interval that "
            "already separated two consecutive ones, within this share of it, scores 0; 0: off"
        ),
    )
    recurrence_size: float = Field(
        default=0.5,
        gt=0,
        description=(
            "similar size: the value within this share of the earlier episode's deviation "
            "from the level"
        ),
    )
    recurrence_memory: int = Field(
        default=8, ge=2, le=64, description="earlier episodes remembered for recurrence"
    )
    outlier_clip: float | None = Field(
        default=6.36,
        gt=0,
        description=(
            "a value more than this many deviations from its prediction is learnt as if it lay "
            "at this distance, so that one wild value does not blind the detector for days "
            "(6.36: where the surprise reaches 1, a one-tail probability of 1e-10); null: off"
        ),
    )
    outlier_run: int = Field(
        default=3,
        ge=0,
        description=(
            "consecutive values beyond outlier_clip learnt clipped (3, as short); the rest of a "
            "longer run is a new regime and learnt in full"
        ),
    )


# Counters stop here, long after every warm-up they gate: the state never grows.
_COUNT_CAP = 1 << 30


class _Surprise:
    """Exponentially weighted mean and variance of a stream, and how surprising a new value is."""

    __slots__ = ("mean", "n", "outliers", "var")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.outliers = 0  # consecutive values beyond outlier_clip, up to outlier_run

    def update(self, value: float, p: LikelihoodParams) -> float:
        """``surprise`` of ``value`` against what came before (0 for the first ``min_points``),
        then learn it."""
        n = self.n
        if n < _COUNT_CAP:
            self.n = n + 1
        level = 0.0
        diff = value - self.mean
        if n >= p.min_points:
            std = max(math.sqrt(self.var), 1e-6)
            level = surprise(_signed(diff, p.direction) / std)
            clip = p.outlier_clip
            if clip is not None and abs(diff) > clip * std:
                if self.outliers < p.outlier_run:
                    # an outlier, not (yet) a new regime: learnt as if it lay at the clip
                    self.outliers += 1
                    diff = math.copysign(clip * std, diff)
            else:
                self.outliers = 0
        alpha = p.alpha if n >= p.min_points else 1.0 / (n + 1)
        self.mean += alpha * diff
        self.var = (1.0 - alpha) * (self.var + alpha * diff * diff)
        return level


class _Tail:
    """HTM's anomaly likelihood: the mean of the last ``short`` surprises against the long-term
    mean and variance of that mean, as a ``surprise`` (0 for the first ``warmup`` points)."""

    __slots__ = ("mean", "n", "recent", "var")

    def __init__(self, short: int) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.recent: deque[float] = deque(maxlen=short)

    def update(self, level: float, p: LikelihoodParams) -> float:
        n = self.n
        if n < _COUNT_CAP:
            self.n = n + 1
        recent = self.recent
        recent.append(level)
        short = sum(recent) / len(recent)
        score = 0.0
        if n >= p.warmup:
            score = surprise((short - self.mean) / max(math.sqrt(self.var), 1e-3))
        alpha = p.likelihood_alpha if n >= p.warmup else 1.0 / (n + 1)
        diff = short - self.mean
        self.mean += alpha * diff
        self.var = (1.0 - alpha) * (self.var + alpha * diff * diff)
        return score


class Likelihood:
    """Anomaly likelihood of the better of two predictions: NAB's best detector here.

    Two predictions of each value, each with its own surprise and likelihood (all exponentially
    weighted: bounded memory, O(1) per point):

    - *level*: the mean of the last ~1/``alpha`` values;
    - *season*: that level plus the usual offset of the value's slot of the period (the hour of
      the day by default: an additive seasonal profile, as Holt-Winters).

    For each, the value's surprise is ``surprise(z)`` of its deviation from the prediction in
    units of the prediction's error spread, and its likelihood (as HTM's) the mean of the last
    ``short`` surprises against the long-term mean and variance of that mean: a series that is
    always noisy has high surprises all the time and scores low; a quiet one scores high at its
    first jolt. The score is the likelihood of the prediction whose recent errors are smaller:
    a series with a daily shape is judged against its hour of the day (a missing peak, a flat
    stretch at a usual level, a jump within the daily range count), any other one against its
    level. The seasonal prediction competes once ``season_warmup`` periods have passed, the
    value's slot has learnt ``slot_min_points`` points and its likelihood has warmed up.

    Two rules about *episodes* (runs of points scoring 0.5 or more) follow:

    - *beyond the range* (HTM's spatial anomaly): a value outside every earlier value's range by
      more than ``range_margin`` of it, and itself a deviation from the level that scores 0.5
      (so that the new records of plain noise do not count), scores 1 however surprising the
      series usually is;
    - *recurring*: among the remembered episodes of similar size (the value within
      ``recurrence_size`` of their deviation), an episode that follows the latest one by an
      interval that already separated two consecutive ones (within ``recurrence_tolerance`` of
      it) scores 0: a job that spikes every day and ten minutes, or every 6 hours, alerts
      twice, then is known; spikes at random times rarely repeat a gap that closely.

    0.5 is a recent surprise 1e-5 unlikely (HTM's threshold on NAB), comparable from one series
    to the next. After a score of 0.5 or more the next ``hold`` points score 0: NAB (and an
    on-call human) counts the first alert of an episode, the rest are noise.
    """

    __slots__ = (
        "_episode_next",
        "_episode_size",
        "_episode_start",
        "_episodes",
        "_high",
        "_hold",
        "_in_episode",
        "_level",
        "_level_tail",
        "_low",
        "_p",
        "_recurring",
        "_residual",
        "_residual_tail",
        "_since",
        "_slot_count",
        "_slot_offset",
    )

    def __init__(self, params: LikelihoodParams | None = None) -> None:
        p = self._p = params or LikelihoodParams()
        self._level = _Surprise()
        self._level_tail = _Tail(p.short)
        self._residual = _Surprise()
        self._residual_tail = _Tail(p.short)
        slots = p.slots if p.season > 0 else 0
        self._slot_offset = array("d", bytes(8 * slots))
        self._slot_count = array("l", bytes(array("l").itemsize * slots))
        self._since: float | None = None
        self._hold = 0
        self._low = math.inf
        self._high = -math.inf
        # start and deviation from the level of the latest episodes, a ring of fixed size
        self._episode_start = array("d", bytes(8 * p.recurrence_memory))
        self._episode_size = array("d", bytes(8 * p.recurrence_memory))
        self._episodes = 0  # episodes remembered (at most recurrence_memory)
        self._episode_next = 0  # where the next one goes
        self._in_episode = False
        self._recurring = False

    def update(self, timestamp: float, value: float) -> float:
        p = self._p
        level = self._level
        mean, var = level.mean, level.var
        armed = level.n >= p.warmup
        own = level.update(value, p)
        beyond = False
        if value > self._high or value < self._low:
            # and itself a 1e-5 deviation: a gaussian series' new records are not anomalies
            beyond = self._beyond_range(value, armed and own >= 0.5)
        score = self._level_tail.update(own, p)
        if p.season > 0 and math.isfinite(timestamp):
            score = self._seasonal(timestamp, value - mean, var, score)
        if beyond:
            score = 1.0
        if score >= 0.5:
            if not self._in_episode:
                self._in_episode = True
                self._recurring = self._recurs(timestamp, value - mean)
            if self._recurring:
                score = 0.0
        else:
            self._in_episode = False

        if self._hold > 0:
            self._hold -= 1
            return 0.0
        if score >= 0.5 and p.hold:
            self._hold = p.hold
        return score

    def _beyond_range(self, value: float, armed: bool) -> bool:
        """Whether ``value``, outside the range seen so far, is beyond it by the margin (once
        ``armed``); the range grows to include it."""
        p = self._p
        low, high = self._low, self._high
        beyond = False
        if armed and p.range_margin is not None and high > low:
            margin = (high - low) * p.range_margin
            if value > high + margin:
                beyond = p.direction != "down"
            elif value < low - margin:
                beyond = p.direction != "up"
        if value < low:
            self._low = value
        if value > high:
            self._high = value
        return beyond

    def _recurs(self, start: float, deviation: float) -> bool:
        """Whether an episode starting at ``start`` follows the latest earlier episode of similar
        size by an interval that already separated two consecutive ones of that size; it is
        remembered either way."""
        p = self._p
        memory = p.recurrence_memory
        starts, sizes = self._episode_start, self._episode_size
        at = self._episode_next
        found = False
        if p.recurrence_tolerance > 0:
            # the remembered starts of similar size, newest first
            newest_first = ((at - k) % memory for k in range(1, self._episodes + 1))
            similar = [
                starts[e]
                for e in newest_first
                if abs(deviation - sizes[e]) <= p.recurrence_size * abs(sizes[e])
            ]
            if similar and start > similar[0]:
                interval = start - similar[0]
                tolerance = p.recurrence_tolerance * interval
                found = any(
                    abs(later - earlier - interval) <= tolerance
                    for later, earlier in pairwise(similar)
                )
        starts[at], sizes[at] = start, deviation
        self._episode_next = (at + 1) % memory
        self._episodes = min(self._episodes + 1, memory)
        return found

    def _seasonal(
        self, timestamp: float, deviation: float, level_var: float, score: float
    ) -> float:
        """Learn the slot's offset from the level; the seasonal likelihood when it predicts
        better than the level alone, else ``score``."""
        p = self._p
        if self._since is None:
            self._since = timestamp
        slot = min(int(timestamp % p.season * p.slots / p.season), p.slots - 1)
        count = self._slot_count[slot]
        offset = self._slot_offset[slot]
        if count >= p.slot_min_points:
            residual = self._residual
            residual_var = residual.var
            level = residual.update(deviation - offset, p)
            if timestamp - self._since >= p.season_warmup * p.season and residual.n > p.min_points:
                tail = self._residual_tail
                seasonal = tail.update(level, p)
                if residual_var < level_var and tail.n > p.warmup:
                    score = seasonal
        alpha = max(1.0 / (count + 1), p.slot_alpha)
        self._slot_offset[slot] = offset + alpha * (deviation - offset)
        if count < _COUNT_CAP:
            self._slot_count[slot] = count + 1
        return score


P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class DetectorKind(Generic[P]):
    params: type[P]
    build: Callable[[P], Detector]
    summary: str

    def make(self, params: Mapping[str, Any] | P | None = None) -> Detector:
        """A fresh detector; ``params`` as a mapping is validated (pydantic ValidationError)."""
        if isinstance(params, self.params):
            return self.build(params)
        return self.build(self.params.model_validate(dict(params or {})))


DETECTORS: dict[str, DetectorKind[Any]] = {
    "ewma": DetectorKind(EwmaParams, Ewma, "deviation from an exponentially weighted mean"),
    "zscore": DetectorKind(ZScoreParams, ZScore, "rolling z-score over a window of points"),
    "throughput_drop": DetectorKind(
        ThroughputDropParams, ThroughputDrop, "fall of a rate below its slow baseline"
    ),
    "phi_accrual": DetectorKind(
        PhiAccrualParams, PhiAccrual, "heartbeat suspicion (timestamps only; value ignored)"
    ),
    "adaptive_timeout": DetectorKind(
        AdaptiveTimeoutParams, AdaptiveTimeout, "duration over a percentile of recent ones"
    ),
    "likelihood": DetectorKind(
        LikelihoodParams,
        Likelihood,
        "anomaly likelihood against the level or the hour of the day (NAB-measured)",
    ),
}

K = TypeVar("K", bound=Hashable)
D = TypeVar("D")


class SeriesBank(Generic[K, D]):
    """One detector per series, at most ``max_series`` of them: the least recently used goes."""

    def __init__(self, factory: Callable[[], D], max_series: int = 10_000) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self._factory = factory
        self._max = max_series
        self._items: OrderedDict[K, D] = OrderedDict()
        self.evicted = 0

    def get(self, key: K) -> D:
        """The series' detector, created on first use; marks the series as just used."""
        items = self._items
        found = items.get(key)
        if found is not None:
            items.move_to_end(key)
            return found
        created = items[key] = self._factory()
        if len(items) > self._max:
            items.popitem(last=False)
            self.evicted += 1
        return created

    def peek(self, key: K) -> D | None:
        return self._items.get(key)

    def items(self) -> list[tuple[K, D]]:
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
