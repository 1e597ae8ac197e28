"""The detectors' behaviour: anomalies score high, steady noise low, scores are online, and state
stays bounded."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.common import percentile
from selfheal.detection.detectors import (
    DETECTORS,
    AdaptiveTimeout,
    AdaptiveTimeoutParams,
    Ewma,
    EwmaParams,
    PhiAccrual,
    PhiAccrualParams,
    SeriesBank,
    ThroughputDrop,
    ZScore,
    ZScoreParams,
    phi,
    squash,
)

VALUE_DETECTORS = ["ewma", "zscore", "throughput_drop", "adaptive_timeout"]


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
        detector = DETECTORS[name].make({"min_points": 2} if name != "phi_accrual" else {})
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
