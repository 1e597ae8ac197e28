"""The detectors' behaviour: anomalies score high, steady noise low, scores are online, and state
stays bounded."""

from __future__ import annotations

import math
import pickle
import random
import sys
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bench.common import percentile
from selfheal.detection.detectors import (
    DETECTORS,
    AdaptiveTimeout,
    AdaptiveTimeoutParams,
    Ewma,
    EwmaParams,
    Likelihood,
    LikelihoodParams,
    PhiAccrual,
    PhiAccrualParams,
    SeriesBank,
    ThroughputDrop,
    ZScore,
    ZScoreParams,
    phi,
    squash,
    surprise,
)

VALUE_DETECTORS = ["ewma", "zscore", "throughput_drop", "adaptive_timeout", "likelihood"]


def noise(n: int, level: float = 100.0, sigma: float = 2.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sigma) for _ in range(n)]


def scores(detector: object, values: list[float]) -> list[float]:
    update = detector.update  # type: ignore[attr-defined]
    return [update(float(i), v) for i, v in enumerate(values)]


def test_squash_puts_the_natural_threshold_at_one_half() -> None:
    assert squash(0.0) == 0.0
    assert squash(-3.0) == 0.0
    assert squash(1.0) == pytest.approx(0.5)
    assert squash(0.5) < 0.2 < 0.9 < squash(2.0) < squash(3.0) <= 1.0
    assert squash(float("inf")) == 1.0


@pytest.mark.parametrize("name", ["ewma", "zscore"])
def test_a_spike_scores_high_and_steady_noise_low(name: str) -> None:
    detector = DETECTORS[name].make()
    steady = scores(detector, noise(200))
    # Gaussian noise passes 3 sigma now and then; a false alarm rate of 2 % is the bound.
    assert sum(s >= 0.5 for s in steady) <= 4
    assert sum(steady) / len(steady) < 0.1  # 0.07 expected for gaussian noise
    assert detector.update(200.0, 100.0 + 2.0 * 10) > 0.99


@pytest.mark.parametrize("name", ["ewma", "zscore"])
def test_a_step_change_scores_high(name: str) -> None:
    detector = DETECTORS[name].make()
    scores(detector, noise(100))
    assert detector.update(100.0, 115.0) > 0.9


@pytest.mark.parametrize(("direction", "up", "down"), [("up", True, False), ("down", False, True)])
def test_direction_limits_what_counts(direction: str, up: bool, down: bool) -> None:
    makers: list[Callable[[], Ewma | ZScore]] = [
        lambda: Ewma(EwmaParams.model_validate({"direction": direction})),
        lambda: ZScore(ZScoreParams.model_validate({"direction": direction})),
    ]
    for make in makers:
        rising, falling = make(), make()
        scores(rising, noise(50))
        scores(falling, noise(50))
        assert (rising.update(50.0, 140.0) > 0.9) is up
        assert (falling.update(50.0, 60.0) > 0.9) is down


def test_nothing_is_scored_before_min_points() -> None:
    detector = ZScore(ZScoreParams(min_points=20))
    assert scores(detector, [1.0] * 19 + [1000.0]) == [0.0] * 20
    assert detector.update(20.0, 1000.0) > 0.5


def test_ewma_clip_keeps_a_burst_scoring_high() -> None:
    plain, clipped = Ewma(EwmaParams(min_std=0.02)), Ewma(EwmaParams(min_std=0.02, clip=3))
    base = [0.0] * 20
    scores(plain, base)
    scores(clipped, base)
    burst = [0.4] * 5
    assert sum(s > 0.5 for s in scores(plain, burst)) == 1
    assert all(s > 0.5 for s in scores(clipped, burst))


def test_zscore_forgets_points_older_than_its_window() -> None:
    detector = ZScore(ZScoreParams(window=20, min_points=10))
    scores(detector, noise(20, level=0.0, sigma=1.0))
    scores(detector, noise(20, level=1000.0, sigma=1.0, seed=2))
    # Only the new regime is in the window: its level is normal, the old one is an anomaly.
    assert detector.update(40.0, 1000.0) < 0.5
    assert detector.update(41.0, 0.0) > 0.99


def test_throughput_drop_scores_falls_not_rises() -> None:
    detector = ThroughputDrop()
    steady = scores(detector, noise(100, level=200.0, sigma=5.0))
    assert max(steady) < 0.1
    assert detector.update(100.0, 400.0) == 0.0
    assert detector.update(101.0, 100.0) == pytest.approx(0.5, abs=0.1)  # the 50 % default
    assert detector.update(102.0, 10.0) > 0.9


def test_adaptive_timeout_follows_the_percentile_of_recent_durations() -> None:
    params = AdaptiveTimeoutParams(window=100, percentile=95, multiplier=1.5)
    detector = AdaptiveTimeout(params)
    assert detector.timeout() is None
    first = [float(d) for d in range(1, 101)]
    scores(detector, first)
    assert detector.timeout() == pytest.approx(percentile(first, 95) * 1.5)
    # The window moves: after 100 longer durations only they count.
    later = [float(d) for d in range(1000, 1100)]
    scores(detector, later)
    limit = detector.timeout()
    assert limit is not None
    assert limit == pytest.approx(percentile(later, 95) * 1.5)
    assert detector.update(0.0, limit) == pytest.approx(0.5)
    assert detector.update(0.0, 1000.0) < 0.1
    assert detector.update(0.0, 3 * limit) > 0.99


# Akka's PhiAccrualFailureDetectorSpec, "return realistic phi values" (ms → s).
@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(0.0, 0.0), (0.5, 0.1), (1.0, 0.3), (1.2, 1.6), (1.4, 4.7), (1.6, 10.8), (1.7, 15.3)],
)
def test_phi_matches_akka_at_known_points(elapsed: float, expected: float) -> None:
    assert phi(elapsed, 1.0, 0.1) == pytest.approx(expected, abs=0.1)


def test_phi_from_the_first_heartbeat_estimate_as_akka() -> None:
    # Akka's "return phi based on guess when only one heartbeat": no pause allowed, 1 s guess.
    detector = PhiAccrual(PhiAccrualParams(acceptable_heartbeat_pause=0))
    assert detector.phi(5.0) == 0.0  # no heartbeat yet: not managed, healthy
    detector.update(0.0)
    assert detector.phi(1.0) == pytest.approx(0.3, abs=0.2)
    assert detector.phi(2.0) == pytest.approx(4.5, abs=0.3)
    assert detector.phi(3.0) > 15.0


def test_phi_grows_with_silence_and_crosses_the_threshold() -> None:
    detector = PhiAccrual()
    for t in range(30):
        assert detector.update(float(t)) < 0.5
    silence = [detector.phi(29.0 + s / 4) for s in range(40)]
    assert silence == sorted(silence)
    assert detector.is_available(30.0)
    assert not detector.is_available(29.0 + 10.0)
    assert detector.score(29.0 + 10.0) > 0.5
    assert detector.update(29.0 + 10.0) > 0.5  # the late heartbeat itself scores high


def test_phi_leaves_the_heartbeat_after_a_failure_out_of_its_history() -> None:
    detector = PhiAccrual()
    for t in range(30):
        detector.update(float(t))
    before = detector.phi(29.0 + 4.5)
    detector.update(29.0 + 60.0)  # back after a minute of silence
    assert detector.phi(89.0 + 4.5) == pytest.approx(before)


def test_phi_ignores_duplicate_and_reordered_heartbeats() -> None:
    steady, noisy = PhiAccrual(), PhiAccrual()
    for t in range(30):
        steady.update(float(t))
        noisy.update(float(t))
        noisy.update(float(t))  # delivered twice
        noisy.update(t - 0.5)  # late and out of order
    assert noisy.phi(33.5) == steady.phi(33.5)


def test_phi_history_is_bounded_by_max_sample_size() -> None:
    detector = PhiAccrual(PhiAccrualParams(max_sample_size=5, acceptable_heartbeat_pause=0))
    t = 0.0
    for _ in range(20):  # slow heartbeats ...
        t += 10.0
        detector.update(t)
    for _ in range(5):  # ... entirely replaced by fast ones
        t += 1.0
        detector.update(t)
    assert detector.phi(t + 1.0) == pytest.approx(phi(1.0, 1.0, 0.1))


def test_registry_validates_params() -> None:
    assert isinstance(DETECTORS["zscore"].make({"window": "30"}), ZScore)
    with pytest.raises(ValidationError, match="alpha"):
        DETECTORS["ewma"].make({"alpha": 2})
    with pytest.raises(ValidationError, match="colour"):
        DETECTORS["zscore"].make({"colour": "red"})


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("name", [*VALUE_DETECTORS, "phi_accrual"])
@settings(max_examples=40, deadline=None)
@given(
    past=st.lists(st.tuples(st.floats(0.01, 100), finite), min_size=1, max_size=80),
    future=st.lists(st.tuples(st.floats(0.01, 100), finite), min_size=1, max_size=40),
)
def test_appending_future_points_never_changes_past_scores(
    name: str, past: list[tuple[float, float]], future: list[tuple[float, float]]
) -> None:
    def run(points: list[tuple[float, float]]) -> list[float]:
        params: dict[str, int] = {} if name == "phi_accrual" else {"min_points": 2}
        if name == "likelihood":
            params["warmup"] = 2
        detector = DETECTORS[name].make(params)
        out, t = [], 0.0
        for gap, value in points:
            t += gap
            score = detector.update(t, value)
            assert 0.0 <= score <= 1.0
            out.append(score)
        return out

    assert run(past + future)[: len(past)] == run(past)


def test_series_bank_evicts_the_least_recently_used() -> None:
    made: list[str] = []
    bank: SeriesBank[str, list[str]] = SeriesBank(lambda: made, max_series=2)
    a = bank.get("a")
    bank.get("b")
    assert bank.get("a") is a  # a is now the most recently used
    bank.get("c")
    assert "b" not in bank
    assert "a" in bank and "c" in bank
    assert len(bank) == 2 and bank.evicted == 1
    assert bank.peek("b") is None


def test_series_bank_makes_a_fresh_detector_after_eviction() -> None:
    bank: SeriesBank[str, ZScore] = SeriesBank(lambda: ZScore(ZScoreParams(min_points=2)), 1)
    first = bank.get("x")
    scores(first, [1.0, 1.0, 1.0])
    bank.get("y")
    again = bank.get("x")
    assert again is not first
    assert again.update(0.0, 1000.0) == 0.0  # nothing learnt yet


def test_series_bank_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="max_series"):
        SeriesBank(lambda: 0, max_series=0)


# --- likelihood -------------------------------------------------------------------------------


def seasonal(n: int, period: int = 96, seed: int = 3) -> list[float]:
    """A daily shape (15-minute points) with noise: what a request rate looks like. The warm-up
    (150 points) covers a period; a shorter one would find the first trough novel."""
    rng = random.Random(seed)
    return [100 + 30 * math.sin(2 * math.pi * i / period) + rng.gauss(0, 2) for i in range(n)]


def test_surprise_is_the_decimal_log_of_the_gaussian_tail() -> None:
    assert surprise(0.0) == 0.0
    assert surprise(-2.0) == 0.0
    # Q(4.2649) = 1e-5: half of the 10 decades.
    assert surprise(4.264891) == pytest.approx(0.5, abs=1e-4)
    assert surprise(40.0) == 1.0


def test_likelihood_is_quiet_on_noise_and_on_a_daily_shape() -> None:
    for values in (noise(3000), seasonal(3000)):
        found = scores(Likelihood(), values)
        # Gaussian noise crosses 0.5 about once per 3000 points; a daily shape is no surprise.
        assert sum(s >= 0.5 for s in found) <= 2
        assert found[:150] == [0.0] * 150  # the warm-up learns, never alerts
    assert max(scores(Likelihood(), seasonal(3000))) < 0.5


def test_likelihood_alerts_once_on_a_spike_then_holds() -> None:
    values = noise(1000)
    values[600] = 100.0 + 2.0 * 12
    values[650] = 100.0 + 2.0 * 12  # the same spike again, inside the hold
    found = scores(Likelihood(), values)
    assert found[600] > 0.5
    assert found[601:700] == [0.0] * 99
    assert max(found[:600]) < 0.5


def test_likelihood_alerts_at_a_level_shift_and_settles_after_it() -> None:
    values = noise(1000) + noise(1000, level=120.0, seed=2)  # a shift of 10 sigma
    found = scores(Likelihood(), values)
    first = next(i for i, s in enumerate(found) if s >= 0.5)
    assert first == 1000
    assert max(found[1001:]) < 0.5  # one alert: held, then the new level is learnt


@pytest.mark.parametrize("wild", [1e3, 1e6, -1e6])
def test_one_wild_value_does_not_blind_the_likelihood(wild: float) -> None:
    """A single absurd value (a counter reset, a unit mix-up) is learnt as if it lay at the clip:
    a spike of 12 sigma a few hundred points later still alerts. Learnt in full (the clip off),
    the wild value inflates the variance for thousands of points and the spike goes unseen."""
    values = noise(3000)
    values[300] = wild
    for at in (600, 1500, 2800):
        values[at] = 100.0 + 2.0 * 12
    clipped = scores(Likelihood(), values)
    unclipped = scores(Likelihood(LikelihoodParams(outlier_clip=None)), values)
    assert [clipped[at] >= 0.5 for at in (600, 1500, 2800)] == [True, True, True]
    assert unclipped[600] < 0.5 and unclipped[1500] < 0.5


@pytest.mark.parametrize("sigmas", [10.0, 50.0, -500.0])
def test_a_lasting_jump_is_a_new_regime_learnt_in_full(sigmas: float) -> None:
    """Beyond ``outlier_run`` values in a row, the clip lets go: the new level is learnt as
    quickly as without it, one alert, then quiet."""
    values = noise(1000) + noise(1500, level=100.0 + 2.0 * sigmas, seed=2)
    found = scores(Likelihood(), values)
    assert [i for i, s in enumerate(found) if s >= 0.5] == [1000]


def test_a_noisy_series_needs_a_bigger_jolt_than_a_quiet_one() -> None:
    """The likelihood compares a point with how surprising the series usually is."""
    quiet = noise(800, sigma=1.0)
    rng = random.Random(5)
    spiky = [v + (rng.random() < 0.05) * rng.uniform(5, 8) for v in noise(800, sigma=1.0)]
    jolt = 100.0 + 5.0
    quiet_score = scores(Likelihood(), [*quiet, jolt])[-1]
    spiky_score = scores(Likelihood(), [*spiky, jolt])[-1]
    assert quiet_score > 0.5 > spiky_score


def test_likelihood_direction_up_ignores_falls() -> None:
    params = LikelihoodParams(direction="up", hold=0)
    rising, falling = Likelihood(params), Likelihood(params)
    scores(rising, noise(500))
    scores(falling, noise(500))
    assert rising.update(500.0, 130.0) > 0.5
    assert falling.update(500.0, 70.0) == 0.0


def spiked(n: int, every: int, seed: int = 1) -> list[float]:
    """Noise with a 30-sigma spike every ``every`` points or so (irregularly): an episode each."""
    rng = random.Random(seed)
    values = noise(n, seed=seed)
    i = every
    while i < n:
        values[i] += 60.0
        i += every + rng.randrange(-every // 3, every // 3)
    return values


def test_likelihood_state_does_not_grow_with_the_series() -> None:
    """Once the episode memory is full (8 episodes), nothing more is kept however long."""
    detector = Likelihood()
    scores(detector, spiked(3_000, every=200))
    assert detector._episodes >= LikelihoodParams().recurrence_memory
    size = len(pickle.dumps(detector))
    scores(detector, spiked(20_000, every=200, seed=2))
    assert len(pickle.dumps(detector)) == size


def test_likelihood_hold_zero_keeps_scoring() -> None:
    values = noise(600)
    values[400] = values[401] = 100.0 + 2.0 * 12
    found = scores(Likelihood(LikelihoodParams(hold=0)), values)
    assert found[400] > 0.5 and found[401] > 0.5


# --- likelihood: the seasonal prediction ------------------------------------------------------

DAY = 86_400.0
STEP = 300.0  # 5-minute points: 288 a day


def daily(days: int, seed: int = 7) -> list[float]:
    """A daily shape (peak at 06:00, trough at 18:00) with noise, one point every 5 minutes."""
    rng = random.Random(seed)
    return [
        100 + 30 * math.sin(2 * math.pi * i * STEP / DAY) + rng.gauss(0, 2)
        for i in range(int(days * DAY / STEP))
    ]


def timed_scores(detector: object, values: list[float]) -> list[float]:
    update = detector.update  # type: ignore[attr-defined]
    return [update(i * STEP, v) for i, v in enumerate(values)]


def alerts(found: list[float]) -> list[int]:
    return [i for i, s in enumerate(found) if s >= 0.5]


AT = int(8 * DAY / STEP)  # midnight of day 8: the seasonal model has learnt a week


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_likelihood_is_quiet_on_days_of_a_daily_shape(seed: int) -> None:
    found = alerts(timed_scores(Likelihood(), daily(12, seed)))
    # The first day's trough may surprise the level (the hour's profile is not learnt yet);
    # after it, noise crosses 0.5 at most about once in three days.
    assert len([i for i in found if i >= 288]) <= 4


def test_likelihood_finds_a_flat_stretch_inside_the_daily_range() -> None:
    """A stuck value at the series' usual mean: no value is unusual, its hour is."""
    values = daily(12)
    flat = slice(AT + 36, AT + 36 + 72)  # 03:00 to 09:00, where the peak should be
    values[flat] = [100.0] * 72
    found = alerts(timed_scores(Likelihood(), values))
    assert any(flat.start <= i < flat.stop for i in found)
    assert not any(AT - 288 <= i < flat.start for i in found)  # quiet the day before
    without_season = alerts(timed_scores(Likelihood(LikelihoodParams(season=0)), values))
    assert not any(flat.start <= i < flat.stop for i in without_season)


def test_likelihood_finds_a_missing_daily_peak() -> None:
    values = daily(12)
    for i in range(AT, AT + 144):  # the morning half of day 8 stays at the trough level
        values[i] = 70 + (values[i] - 100 - 30 * math.sin(2 * math.pi * i * STEP / DAY))
    found = alerts(timed_scores(Likelihood(), values))
    assert any(AT <= i < AT + 144 for i in found)


@pytest.mark.parametrize("jump", [60.0, -60.0])
def test_likelihood_finds_a_spike_and_a_level_shift_in_a_daily_series(jump: float) -> None:
    values = daily(12)
    values[AT + 50] += jump
    values[AT + 600 :] = [v + jump for v in values[AT + 600 :]]
    found = alerts(timed_scores(Likelihood(), values))
    assert AT + 50 in found
    assert AT + 600 in found


def test_likelihood_with_a_season_ignores_disordered_timestamps() -> None:
    """Repeated and backward timestamps (real exports have them) still give scores in [0, 1]."""
    detector = Likelihood(LikelihoodParams(season=3600.0, slots=4, season_warmup=1.0))
    rng = random.Random(9)
    t = 0.0
    for value in daily(3):
        t += rng.choice([-60.0, 0.0, 60.0, 120.0])
        assert 0.0 <= detector.update(t, value) <= 1.0


def deep_size(thing: object) -> int:
    """Bytes of an object and of everything it holds (slots, containers), counted once each."""
    seen: set[int] = set()

    def size(x: object) -> int:
        if id(x) in seen or isinstance(x, type | BaseModel):
            return 0
        seen.add(id(x))
        total = sys.getsizeof(x)
        if isinstance(x, dict):
            total += sum(size(k) + size(v) for k, v in x.items())
        elif isinstance(x, list | tuple | deque | set):
            total += sum(size(item) for item in x)
        for name in getattr(type(x), "__slots__", ()):
            if hasattr(x, name):
                total += size(getattr(x, name))
        return total

    return size(thing)


def test_likelihood_state_stays_the_same_size_over_100k_points() -> None:
    detector = Likelihood()
    values = daily(2)
    for i in range(300, len(values), 61):
        values[i] += 100.0  # episodes at irregular times fill the episode memory
    update = detector.update
    for i in range(2_000):
        update(i * STEP, values[i % len(values)])
    assert detector._episodes >= LikelihoodParams().recurrence_memory
    size = deep_size(detector)
    for i in range(2_000, 100_000):
        update(i * STEP, values[i % len(values)])
    assert detector._residual_tail.n > 90_000  # the seasonal model has been running
    assert deep_size(detector) == size


# --- likelihood: episodes beyond the range, and recurring ones ---------------------------------


def spiky_series(n: int, seed: int = 4) -> list[float]:
    """Noise with a spike of +10 to +40 one point in five: the likelihood learns to expect big
    jolts."""
    rng = random.Random(seed)
    return [100.0 + rng.gauss(0, 2) + (rng.random() < 0.2) * rng.uniform(10, 40) for _ in range(n)]


def test_a_value_far_beyond_the_range_alerts_even_on_a_spiky_series() -> None:
    values = spiky_series(2_000)
    high = max(values)
    within, beyond = [*values, high - 5.0], [*values, high + 10.0]
    unheld = LikelihoodParams(hold=0)
    assert scores(Likelihood(unheld.model_copy(update={"range_margin": None})), beyond)[-1] < 0.5
    assert scores(Likelihood(unheld), within)[-1] < 0.5
    assert scores(Likelihood(unheld), beyond)[-1] == 1.0


def test_new_records_of_plain_noise_are_not_beyond_the_range() -> None:
    """Gaussian noise sets a new maximum now and then; only a deviation that is itself
    1e-5 unlikely counts."""
    for seed in (1, 2, 3):
        found = scores(Likelihood(), noise(5_000, seed=seed))
        assert sum(s >= 0.5 for s in found) <= 3


def test_a_spike_that_recurs_at_a_steady_interval_alerts_twice_then_is_known() -> None:
    """A job spiking every 290 points (not a daily period: its time drifts)."""
    values = noise(4_000)
    spikes = list(range(300, 4_000, 290))
    for i in spikes:
        values[i] += 30.0
    found = alerts(scores(Likelihood(), values))
    assert found == spikes[:2]
    off = alerts(scores(Likelihood(LikelihoodParams(recurrence_tolerance=0)), values))
    assert len(off) >= len(spikes) - 1


def test_spikes_at_random_times_are_not_taken_for_a_job() -> None:
    """Episodes of one size at Poisson times: few gaps repeat an earlier gap within 3 %."""
    rng = random.Random(11)
    values = noise(60_000)
    spikes, i = [], 300
    while i < len(values):
        values[i] += 30.0
        spikes.append(i)
        i += 30 + int(rng.expovariate(1 / 300))
    found = set(alerts(scores(Likelihood(LikelihoodParams(hold=0)), values)))
    alerted = sum(i in found for i in spikes)
    assert len(spikes) > 150
    assert alerted >= 0.85 * len(spikes)


def test_a_recurring_time_with_another_size_or_an_irregular_time_still_alerts() -> None:
    values = noise(4_000)
    for i in range(300, 4_000, 290):
        values[i] += 30.0
    values[300 + 290 * 8] += 60.0  # at the usual time, three times the usual size
    values[300 + 290 * 10 + 140] += 30.0  # the usual size, half-way between two
    found = alerts(scores(Likelihood(), values))
    assert 300 + 290 * 8 in found
    assert 300 + 290 * 10 + 140 in found


@settings(max_examples=40, deadline=None)
@given(
    past=st.lists(st.tuples(st.floats(0.01, 100), finite), min_size=1, max_size=120),
    future=st.lists(st.tuples(st.floats(0.01, 100), finite), min_size=1, max_size=40),
)
def test_seasonal_likelihood_scores_are_online_and_in_range(
    past: list[tuple[float, float]], future: list[tuple[float, float]]
) -> None:
    """A short season so that the seasonal prediction competes within the example."""
    params = LikelihoodParams(
        min_points=2, warmup=2, season=60.0, slots=3, slot_min_points=1, season_warmup=1.0
    )

    def run(points: list[tuple[float, float]]) -> list[float]:
        detector, out, t = Likelihood(params), [], 0.0
        for gap, value in points:
            t += gap
            score = detector.update(t, value)
            assert 0.0 <= score <= 1.0
            out.append(score)
        return out

    assert run(past + future)[: len(past)] == run(past)
