"""Choosing among candidate solutions: Thompson sampling over recency-weighted Beta posteriors.

Pure arithmetic, no I/O: the knowledge base feeds it stored tallies, and the simulation test feeds
it a simulated clock, so both exercise the same code.

- **Recency**: an outcome's weight halves every ``half_life_s``. A tally stores weighted attempts
  and successes *as of* one time (``at``) and is decayed to any later time by one factor, so it
  never needs the list of past outcomes. A solution that stopped working sheds its old successes
  and loses its rank; one that is never tried keeps what it had (there is nothing to learn from
  time alone), and its posterior widens only through the weight it lost.
- **Posterior**: Beta(successes + prior successes + 1, failures + prior failures + 1). The
  author's priors (``prior_successes``/``prior_attempts`` in the catalog) do not decay: they are
  a statement, not an observation.
- **Per service, then overall**: a solution's record on the service acted on decides once it
  holds ``min_service_attempts`` weighted attempts; below that the solution's record over every
  service stands in, so a new service starts from what the solution does elsewhere.
- **Thompson sampling**: each candidate draws from its posterior and the highest draw goes first.
  A well-proven solution wins almost always, an uncertain one sometimes: exploration in
  proportion to the chance of being the best, with no tuning knob.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

import numpy as np

K = TypeVar("K")
Basis = Literal["service", "global"]

CREDIBLE_MASS = 0.9
INTERVAL_DRAWS = 20_000
INTERVAL_SEED = 0


def decay(elapsed_s: float, half_life_s: float) -> float:
    """The weight left of an outcome ``elapsed_s`` old. Not above 1: an outcome stamped in the
    future (clock skew between workers) counts as new, never as more than one outcome."""
    if elapsed_s <= 0 or math.isinf(half_life_s):
        return 1.0
    return float(0.5 ** (elapsed_s / half_life_s))


@dataclass(frozen=True)
class Tally:
    """Weighted attempts and successes, as of ``at`` (None: nothing counted yet)."""

    attempts: float = 0.0
    successes: float = 0.0
    at: datetime | None = None

    @property
    def failures(self) -> float:
        return max(0.0, self.attempts - self.successes)

    def decayed(self, now: datetime, half_life_s: float) -> Tally:
        """The tally as seen at ``now``. A tally already newer than ``now`` is kept as it is."""
        if self.at is None or now <= self.at:
            return self
        factor = decay((now - self.at).total_seconds(), half_life_s)
        return Tally(self.attempts * factor, self.successes * factor, now)

    def add(self, succeeded: bool, at: datetime, half_life_s: float) -> Tally:
        """Count one outcome that happened at ``at``.

        Outcomes may arrive out of order (a healing that ended earlier is recorded later): the
        tally moves to the later of its time and ``at``, and whichever side is older is decayed
        to it, so the result does not depend on the order of recording.
        """
        if self.at is None:
            return Tally(1.0, 1.0 if succeeded else 0.0, at)
        latest = max(self.at, at)
        base = self.decayed(latest, half_life_s)
        weight = decay((latest - at).total_seconds(), half_life_s)
        return Tally(
            base.attempts + weight, base.successes + (weight if succeeded else 0.0), latest
        )


def combined(tallies: Iterable[Tally], now: datetime, half_life_s: float) -> Tally:
    """The sum of ``tallies``, each decayed to ``now``: a solution's record over every service.
    Decay multiplies every tally by the same factor, so the sum of the decayed tallies is the
    decayed sum of the outcomes."""
    attempts = successes = 0.0
    for tally in tallies:
        seen = tally.decayed(now, half_life_s)
        attempts += seen.attempts
        successes += seen.successes
    return Tally(attempts, successes, now)


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha, beta) over a solution's success probability."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.beta(self.alpha, self.beta))

    def interval(self, mass: float = CREDIBLE_MASS) -> tuple[float, float]:
        """The equal-tailed credible interval holding ``mass`` of the posterior.

        Monte Carlo quantiles from a fixed seed: the same posterior always gives the same
        interval, within about 0.005 of the exact quantiles (enough for a report; nothing is
        decided on it)."""
        draws = np.random.default_rng(INTERVAL_SEED).beta(self.alpha, self.beta, INTERVAL_DRAWS)
        low, high = np.quantile(draws, [(1.0 - mass) / 2.0, (1.0 + mass) / 2.0])
        return float(low), float(high)


def posterior(tally: Tally, prior_successes: int = 0, prior_attempts: int = 0) -> Posterior:
    prior_failures = max(0, prior_attempts - prior_successes)
    return Posterior(
        alpha=tally.successes + prior_successes + 1.0,
        beta=tally.failures + prior_failures + 1.0,
    )


def evidence(
    service: Tally,
    overall: Tally,
    *,
    now: datetime,
    half_life_s: float,
    min_service_attempts: float,
) -> tuple[Basis, Tally]:
    """The record that ranks a solution on a service: its own there once it holds
    ``min_service_attempts`` weighted attempts, else the solution's record everywhere."""
    here = service.decayed(now, half_life_s)
    if here.attempts >= min_service_attempts:
        return "service", here
    return "global", overall.decayed(now, half_life_s)


@dataclass(frozen=True)
class Candidate(Generic[K]):
    """A solution to rank: its key, its author's priors, its record on the service acted on
    and over every service (``overall`` includes ``service``)."""

    key: K
    service: Tally = Tally()
    overall: Tally = Tally()
    prior_successes: int = 0
    prior_attempts: int = 0


@dataclass(frozen=True)
class Ranked(Generic[K]):
    key: K
    basis: Basis
    tally: Tally = Tally()
    posterior: Posterior = Posterior(1.0, 1.0)
    sampled: float = 0.5


def thompson_rank(
    candidates: Sequence[Candidate[K]],
    *,
    now: datetime,
    half_life_s: float,
    min_service_attempts: float,
    rng: np.random.Generator,
) -> list[Ranked[K]]:
    """The candidates, highest posterior draw first.

    One draw per candidate, in the order given: with a seeded ``rng`` the ranking is
    reproducible. Equal draws (practically never) keep the order given, so the caller's order
    is the tie-break.
    """
    ranked: list[Ranked[K]] = []
    for candidate in candidates:
        basis, tally = evidence(
            candidate.service,
            candidate.overall,
            now=now,
            half_life_s=half_life_s,
            min_service_attempts=min_service_attempts,
        )
        belief = posterior(tally, candidate.prior_successes, candidate.prior_attempts)
        ranked.append(Ranked(candidate.key, basis, tally, belief, belief.sample(rng)))
    ranked.sort(key=lambda r: -r.sampled)
    return ranked
