"""The faults ``selfheal dev --demo SCENARIO`` can inject into the demo services.

Each scenario names the root cause the diagnosis is expected to find and the component (the
service of the catalog) a healing must act on, so that a demo run can tell a right healing from
a lucky one. Every scenario is injected through checkout (``POST /inject/<name>``), which passes
inventory's on; what the services then show is evidence only: traces, metrics, probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

CHECKOUT = "checkout"
INVENTORY = "inventory"


class UnknownScenario(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    root_cause: str
    component: str
    """the service whose state a healing must change"""
    heals_by: str = ""

    @property
    def inject_path(self) -> str:
        return f"/inject/{self.name}"

    def inject(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        """Inject the fault through checkout at ``base_url`` (e.g. http://127.0.0.1:8780)."""
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
            description="flag new_checkout is switched on; its code path fails 3 checkouts in 5",
            root_cause="bad_feature_flag",
            component=CHECKOUT,
            heals_by="switching flag new_checkout off; a restart does not help",
        ),
        Scenario(
            name="hang",
            description="checkout stops answering HTTP; probes time out",
            root_cause="process_hung",
            component=CHECKOUT,
            heals_by="restarting checkout",
        ),
        Scenario(
            name="crash",
            description="checkout exits with code 1",
            root_cause="process_crashed",
            component=CHECKOUT,
            heals_by="restarting checkout",
        ),
        Scenario(
            name="poisoned_cache",
            description="a corrupt cache entry makes every checkout fail in cache.get",
            root_cause="cache_poisoned",
            component=CHECKOUT,
            heals_by="flushing checkout's cache (POST /admin/cache/flush); a restart does not help",
        ),
        Scenario(
            name="dependency_slow",
            description="inventory answers in 1s; checkout's calls to it time out",
            root_cause="dependency_degraded",
            component=CHECKOUT,
            heals_by="degrading checkout to its fallback path (http.degrade mode=fallback); "
            "restarting either service does not help",
        ),
        Scenario(
            name="inventory_errors",
            description="inventory's in-memory index is corrupt; every reservation fails, so "
            "checkouts fail",
            root_cause="dependency_failing",
            component=INVENTORY,
            heals_by="restarting inventory (it reloads its index); restarting checkout does not "
            "help",
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise UnknownScenario(f"unknown demo scenario {name!r}; known: {known}") from None
