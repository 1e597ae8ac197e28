"""Thompson sampling over recency-weighted posteriors (models/ranking.py): the arithmetic, and a
simulation of healings in which the best solution wins, then loses its rank when it stops
working."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfheal.models.ranking import (
    Candidate,
    Posterior,
    Tally,
    combined,
    decay,
    evidence,
    posterior,
    thompson_rank,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400.0


# --- decay --------------------------------------------------------------------------------


def test_an_outcome_counts_half_after_one_half_life() -> None:
    tally = Tally().add(True, T0, DAY)
    assert (tally.attempts, tally.successes) == (1.0, 1.0)

    later = tally.decayed(T0 + timedelta(days=1), DAY)
    assert later.attempts == pytest.approx(0.5)
    assert later.decayed(T0 + timedelta(days=3), DAY).attempts == pytest.approx(0.125)
    assert decay(-5.0, DAY) == 1.0, "an outcome from the future counts as new, not more"
    assert decay(1e9, math.inf) == 1.0, "an infinite half-life never forgets"


def test_a_tally_is_not_decayed_backwards() -> None:
    tally = Tally(4.0, 2.0, T0)
    assert tally.decayed(T0 - timedelta(days=1), DAY) == tally


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=30 * 24)),
        min_size=1,
        max_size=20,
    )
)
def test_the_tally_does_not_depend_on_the_order_of_recording(
    outcomes: list[tuple[bool, int]],
) -> None:
    """Each outcome weighs 0.5 ** (age / half-life) however late it was recorded."""

    def replay(order: list[tuple[bool, int]]) -> Tally:
        tally = Tally()
        for succeeded, hour in order:
            tally = tally.add(succeeded, T0 + timedelta(hours=hour), DAY)
        return tally

    now = T0 + timedelta(days=31)
    forward = replay(outcomes).decayed(now, DAY)
    backward = replay(list(reversed(outcomes))).decayed(now, DAY)
    expected = sum(decay((now - T0).total_seconds() - h * 3600.0, DAY) for _, h in outcomes)
    assert forward.attempts == pytest.approx(expected)
    assert backward.attempts == pytest.approx(forward.attempts)
    assert backward.successes == pytest.approx(forward.successes)


def test_combined_sums_tallies_decayed_to_one_time() -> None:
    now = T0 + timedelta(days=2)
    total = combined([Tally(2.0, 2.0, T0), Tally(1.0, 0.0, now)], now, DAY)
    assert (total.attempts, total.successes, total.at) == (pytest.approx(1.5), 0.5, now)


# --- posterior ----------------------------------------------------------------------------


def test_the_posterior_adds_priors_and_one_success_and_one_failure() -> None:
    belief = posterior(Tally(4.0, 3.0, T0), prior_successes=9, prior_attempts=10)
    assert (belief.alpha, belief.beta) == (13.0, 3.0)
    assert belief.mean == pytest.approx(13 / 16)
    assert posterior(Tally()) == Posterior(1.0, 1.0)


def test_the_credible_interval_is_deterministic_and_narrows_with_evidence() -> None:
    uniform = Posterior(1.0, 1.0).interval(0.9)
    assert uniform == pytest.approx((0.05, 0.95), abs=0.01)
    assert Posterior(1.0, 1.0).interval(0.9) == uniform, "same posterior, same interval"

    proven = Posterior(91.0, 11.0)
    low, high = proven.interval(0.9)
    assert low < proven.mean < high
    assert high - low < 0.15 < uniform[1] - uniform[0]


# --- per service, then overall ------------------------------------------------------------


def test_a_service_is_ranked_by_its_own_record_once_it_has_enough() -> None:
    overall = Tally(50.0, 45.0, T0)
    few = Tally(2.0, 0.0, T0)
    enough = Tally(5.0, 0.0, T0)
    kwargs = {"now": T0, "half_life_s": DAY, "min_service_attempts": 5.0}

    assert evidence(few, overall, **kwargs) == ("global", overall)
    assert evidence(enough, overall, **kwargs) == ("service", enough)
    # decay counts: five attempts a day old weigh 2.5, below the threshold again
    basis, _ = evidence(enough, overall, **{**kwargs, "now": T0 + timedelta(days=1)})
    assert basis == "global"


def test_ranking_is_reproducible_with_a_seeded_generator_and_follows_the_posterior() -> None:
    candidates = [
        Candidate("proven", overall=Tally(100.0, 95.0, T0)),
        Candidate("poor", overall=Tally(100.0, 10.0, T0)),
        Candidate("untried"),
    ]

    def order(seed: int) -> list[str]:
        ranked = thompson_rank(
            candidates,
            now=T0,
            half_life_s=DAY,
            min_service_attempts=5.0,
            rng=np.random.default_rng(seed),
        )
        return [r.key for r in ranked]

    assert order(7) == order(7)
    firsts = Counter(order(seed)[0] for seed in range(200))
    assert firsts["proven"] > 180  # Beta(96, 6) against Beta(1, 1): untried wins ~5 %
    assert firsts["poor"] == 0
    assert firsts["untried"] > 0, "an untried solution is explored now and then"


# --- simulation ---------------------------------------------------------------------------

HALF_LIFE_S = 2 * DAY
HOUR = timedelta(hours=1)


@dataclass
class Simulation:
    """Healings one an hour on one service; each tries the candidates in ranked order until one
    heals (as the workflow does) and every attempt teaches the tallies."""

    rates: dict[str, float]
    half_life_s: float = HALF_LIFE_S
    seed: int = 0
    tallies: dict[str, Tally] = field(default_factory=dict)
    clock: datetime = T0
    chosen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.outcomes = np.random.default_rng(self.seed + 10_000)

    def heal(self) -> None:
        candidates = [
            Candidate(name, service=self.tallies.get(name, Tally()),
                      overall=self.tallies.get(name, Tally()))
            for name in sorted(self.rates)
        ]  # fmt: skip
        ranked = thompson_rank(
            candidates,
            now=self.clock,
            half_life_s=self.half_life_s,
            min_service_attempts=5.0,
            rng=self.rng,
        )
        self.chosen.append(ranked[0].key)
        for plan in ranked:
            healed = bool(self.outcomes.random() < self.rates[plan.key])
            tally = self.tallies.get(plan.key, Tally())
            self.tallies[plan.key] = tally.add(healed, self.clock, self.half_life_s)
            if healed:
                break
        self.clock += HOUR

    def run(self, healings: int) -> list[str]:
        start = len(self.chosen)
        for _ in range(healings):
            self.heal()
        return self.chosen[start:]


def most_chosen(chosen: list[str]) -> str:
    return Counter(chosen).most_common(1)[0][0]


PHASE = 300
LAST = 100


@pytest.mark.parametrize("seed", range(8))
def test_the_best_solution_wins_then_another_takes_over_when_it_stops_working(seed: int) -> None:
    sim = Simulation({"good": 0.9, "fair": 0.5, "poor": 0.2}, seed=seed)

    phase1 = sim.run(PHASE)
    assert Counter(phase1[-LAST:])["good"] >= 0.85 * LAST
    assert Counter(phase1)["poor"] < 0.1 * PHASE

    sim.rates["good"] = 0.1
    phase2 = sim.run(PHASE)
    assert most_chosen(phase2[-LAST:]) == "fair"
    assert Counter(phase2[-LAST:])["good"] <= 0.1 * LAST


def test_without_recency_a_solution_that_stopped_working_keeps_its_rank_much_longer() -> None:
    """The same healings with an infinite half-life: the old successes never fade, so the
    failing solution stays first for far longer — the decay is what lets another take over."""
    stale: list[int] = []
    fresh: list[int] = []
    for seed in range(4):
        for half_life, counts in ((math.inf, stale), (HALF_LIFE_S, fresh)):
            sim = Simulation({"good": 0.9, "fair": 0.5, "poor": 0.2}, half_life, seed)
            sim.run(PHASE)
            sim.rates["good"] = 0.1
            counts.append(Counter(sim.run(PHASE))["good"])
    assert sum(fresh) * 3 < sum(stale)
