"""The faults ``selfheal dev --demo SCENARIO`` can inject into the demo target.

Each scenario names the root cause the diagnosis rules are expected to find for it, so that a
demo run can tell a right healing from a lucky one.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


class UnknownScenario(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    root_cause: str
    heals_by: str = ""

    @property
    def inject_path(self) -> str:
        return f"/inject/{self.name}"

    def inject(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        """Inject the fault into the demo target at ``base_url`` (e.g. http://127.0.0.1:8780)."""
        response = httpx.post(base_url.rstrip("/") + self.inject_path, timeout=timeout_s)
        if response.status_code != httpx.codes.ACCEPTED:
            raise RuntimeError(
                f"injecting {self.name!r} into {base_url}: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="error_burst",
            description="a bad feature flag (new_checkout) makes 3 checkouts in 5 fail",
            root_cause="bad_feature_flag",
            heals_by="switching flag new_checkout off; a restart does not help",
        ),
        Scenario(
            name="hang",
            description="the process stops answering HTTP; probes time out",
            root_cause="process_hung",
            heals_by="restarting the process",
        ),
        Scenario(
            name="crash",
            description="the process exits with code 1",
            root_cause="process_crashed",
            heals_by="restarting the process",
        ),
        Scenario(
            name="poisoned_cache",
            description="a corrupt cache entry makes every checkout fail",
            root_cause="cache_poisoned",
            heals_by="flushing the cache (POST /admin/cache/flush); a restart does not help",
        ),
        Scenario(
            name="dependency_slow",
            description="the downstream dependency times out; checkouts fail after a delay",
            root_cause="dependency_degraded",
            heals_by="degrading to the fallback path (http.degrade mode=fallback)",
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise UnknownScenario(f"unknown demo scenario {name!r}; known: {known}") from None
