"""The knowledge base's figures as Prometheus metrics of the worker.

A custom collector reads ``KnowledgeBase.stats()`` on every scrape, so the figures are those of
``selfheal kb stats`` at that moment, decay included, and nothing is kept in memory between
scrapes. It is served on its own port (``worker.kb_metrics_port``), apart from the SDK's metrics
(``worker.metrics_port``), which the Temporal runtime serves itself.

Per solution version and the service acted on (labels ``solution``, ``version``, ``service``):
``selfheal_solution_attempts``, ``_successes``, ``_weighted_attempts``, ``_success_rate`` with
``_success_rate_lower``/``_upper`` (the 90 % credible interval), and
``selfheal_solution_mean_time_to_recover_seconds``, ``..._last_used_timestamp_seconds``.
Per rule (label ``rule``) and per root cause (label ``root_cause``), in families of their own so
that each family has one set of labels: ``selfheal_hypothesis_hit_rate_by_rule``,
``..._decided_by_rule``, ``..._confirmed_by_rule`` and the same ``_by_root_cause``.
``selfheal_kb_up`` is 0 when the knowledge base could not be read (the scrape still answers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from selfheal.core.settings import LearningSettings
from selfheal.domain import SelfhealError
from selfheal.models.knowledge_base import HitRate, KnowledgeBase, KnowledgeStats

log = structlog.get_logger(__name__)

SOLUTION_LABELS = ["solution", "version", "service"]


class KnowledgeBaseCollector(Collector):
    """Reads the knowledge base's statistics at each scrape (in the server's thread)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb

    def describe(self) -> list[Metric]:
        # Families without samples: registering the collector does not query the database.
        return list(_families(None, describe=True))

    def collect(self) -> Iterator[Metric]:
        try:
            stats: KnowledgeStats | None = self._kb.stats()
        except SelfhealError as exc:
            log.warning("knowledge base metrics unavailable", error=str(exc))
            stats = None
        yield from _families(stats)


def _families(stats: KnowledgeStats | None, *, describe: bool = False) -> Iterator[Metric]:
    up = GaugeMetricFamily("selfheal_kb_up", "1 if the knowledge base could be read, else 0")
    if not describe:
        up.add_metric([], 0.0 if stats is None else 1.0)
    yield up

    def solution_gauge(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=SOLUTION_LABELS)

    attempts = solution_gauge("selfheal_solution_attempts", "attempts of the solution")
    successes = solution_gauge("selfheal_solution_successes", "attempts that recovered")
    weighted = solution_gauge(
        "selfheal_solution_weighted_attempts", "attempts weighed by age (learning.half_life_s)"
    )
    rate = solution_gauge(
        "selfheal_solution_success_rate", "posterior mean of the success rate, priors included"
    )
    lower = solution_gauge(
        "selfheal_solution_success_rate_lower", "lower bound of the 90% credible interval"
    )
    upper = solution_gauge(
        "selfheal_solution_success_rate_upper", "upper bound of the 90% credible interval"
    )
    ttr = solution_gauge(
        "selfheal_solution_mean_time_to_recover_seconds", "mean time to recover of its successes"
    )
    used = solution_gauge(
        "selfheal_solution_last_used_timestamp_seconds", "when it was last tried (unix time)"
    )
    for s in stats.solutions if stats is not None else []:
        labels = [s.solution, str(s.version), s.service]
        attempts.add_metric(labels, s.attempts)
        successes.add_metric(labels, s.successes)
        weighted.add_metric(labels, s.weighted_attempts)
        rate.add_metric(labels, s.success_rate)
        lower.add_metric(labels, s.success_rate_lower)
        upper.add_metric(labels, s.success_rate_upper)
        if s.mean_time_to_recover_s is not None:
            ttr.add_metric(labels, s.mean_time_to_recover_s)
        if s.last_used_at is not None:
            used.add_metric(labels, s.last_used_at.timestamp())
    yield from (attempts, successes, weighted, rate, lower, upper, ttr, used)

    yield from _hit_rate_families("rule", stats.rules if stats is not None else [])
    yield from _hit_rate_families("root_cause", stats.root_causes if stats is not None else [])


def _hit_rate_families(label: str, rates: list[HitRate]) -> Iterator[Metric]:
    of = "rule" if label == "rule" else "root cause"
    hit_rate = GaugeMetricFamily(
        f"selfheal_hypothesis_hit_rate_by_{label}",
        f"share of decided healings whose top hypothesis (per {of}) was confirmed",
        labels=[label],
    )
    decided = GaugeMetricFamily(
        f"selfheal_hypothesis_decided_by_{label}",
        f"healings whose top hypothesis (per {of}) was confirmed or refuted",
        labels=[label],
    )
    confirmed = GaugeMetricFamily(
        f"selfheal_hypothesis_confirmed_by_{label}",
        f"healings whose top hypothesis (per {of}) was confirmed",
        labels=[label],
    )
    for r in rates:
        decided.add_metric([r.key], r.decided)
        confirmed.add_metric([r.key], r.confirmed)
        if r.hit_rate is not None:
            hit_rate.add_metric([r.key], r.hit_rate)
    yield from (hit_rate, decided, confirmed)


@dataclass
class KnowledgeBaseMetricsServer:
    """The HTTP endpoint serving the collector; ``close`` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_kb_metrics(
    port: int,
    session_factory: sessionmaker[Session],
    learning: LearningSettings | None = None,
    *,
    addr: str = "0.0.0.0",
) -> KnowledgeBaseMetricsServer | None:
    """Serve the knowledge base's metrics on ``addr:port`` (``/metrics`` or any path), in a
    daemon thread. None when ``port`` is 0, or when the port cannot be bound: the figures are
    for people, and a worker that heals matters more than one that reports (a warning says so).
    """
    if port == 0:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KnowledgeBaseCollector(KnowledgeBase(session_factory, learning=learning)))
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        log.warning("knowledge base metrics not served", port=port, error=str(exc))
        return None
    return KnowledgeBaseMetricsServer(server, thread)
