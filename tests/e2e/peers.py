"""Real Prometheus and Alertmanager (Debian's packages, installed by ``.ci/peers.sh``) on free
loopback ports, with temporary storage and intervals short enough for a test.

Outside CI a machine without the binaries skips the tests that need them, saying why; in CI
(``CI=true``) a missing binary fails them, so that a broken install step cannot pass as green.

Also selfheal's side of those tests: the intake app as ``selfheal serve`` builds it, on a free
port, and a copy of runbooks/ whose service catalog points at the demo target under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from selfheal.activities.actions import default_registry
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import load_services
from selfheal.core.settings import IntakeSettings
from selfheal.detection.detector_config import load_detector_config
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.healings import Healings
from selfheal.models.catalog import load_catalog
from selfheal.models.knowledge_base import KnowledgeBase
from tests.support import free_ports, sessions

REPO = Path(__file__).resolve().parents[2]

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
INSTALL_HINT = "run `bash .ci/peers.sh` (apt-get install prometheus prometheus-alertmanager)"


def require_binary(path: str) -> str:
    """``path`` if it is executable; otherwise skip the test, or fail it in CI."""
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(Path(path).name)
    if found:
        return found
    reason = f"{path} is not installed: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@dataclass
class Peer:
    """A peer process listening on ``url``; its output goes to ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Prometheus(Peer):
    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as the rules manager sees them."""
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["data"]["alerts"]
        return alerts

    def alertmanagers(self) -> list[dict[str, Any]]:
        """Alertmanagers the notifier has discovered (alerts sent before that are dropped)."""
        found: list[dict[str, Any]] = self.get("/api/v1/alertmanagers")["data"][
            "activeAlertmanagers"
        ]
        return found

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["data"]["result"]
        return result


@dataclass
class Alertmanager(Peer):
    def alerts(self, *, active: bool = True) -> list[dict[str, Any]]:
        params = {"active": str(active).lower(), "silenced": "false", "inhibited": "false"}
        alerts: list[dict[str, Any]] = self.get("/api/v2/alerts", **params)
        return alerts


def prometheus_config(
    *,
    scrape_targets: Sequence[str],
    rule_file: Path,
    alertmanager: str | None,
    interval: str = "1s",
) -> dict[str, Any]:
    """A ``prometheus.yml`` (JSON is YAML) scraping ``host:port`` targets as job ``demo``."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rule_file)],
        "scrape_configs": [
            {
                "job_name": "demo",
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def alert_rules(
    group: str, rules: Sequence[dict[str, Any]], interval: str = "1s"
) -> dict[str, Any]:
    """A rule file with one group of alerting rules (each: alert, expr, for, labels, ...)."""
    return {"groups": [{"name": group, "interval": interval, "rules": list(rules)}]}


def alertmanager_config(
    webhook_url: str,
    token: str,
    *,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> dict[str, Any]:
    """One route to one webhook receiver with a bearer token; every alert its own group, so that
    each is posted on its own, and resolutions are sent (``send_resolved``)."""
    return {
        "route": {
            "receiver": "selfheal",
            "group_by": ["..."],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "selfheal",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            }
        ],
    }


def _wait_ready(peer: Peer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if peer.process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {peer.process.returncode}:\n{peer.tail()}")
        try:
            if httpx.get(f"{peer.url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{peer.name} not ready on {peer.url} in {timeout_s}s:\n{peer.tail()}"
            )
        time.sleep(0.1)


@contextmanager
def _run(
    name: str, command: list[str], url: str, log: Path, ready_timeout_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(Peer(name, process, url, log), ready_timeout_s)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def run_prometheus(
    work_dir: Path,
    *,
    scrape_targets: Sequence[str],
    rules: dict[str, Any],
    alertmanager: str | None = None,
    interval: str = "1s",
    ready_timeout_s: float = 20.0,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``scrape_targets`` (``host:port``), evaluating ``rules`` and sending
    alerts to ``alertmanager`` (``host:port``), with its TSDB under ``work_dir``."""
    binary = require_binary(PROMETHEUS)
    work_dir.mkdir(parents=True, exist_ok=True)
    rule_file = work_dir / "rules.yml"
    rule_file.write_text(json.dumps(rules))
    config_file = work_dir / "prometheus.yml"
    config = prometheus_config(
        scrape_targets=scrape_targets,
        rule_file=rule_file,
        alertmanager=alertmanager,
        interval=interval,
    )
    config_file.write_text(json.dumps(config))
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        # Alerts evaluated before the Alertmanager is discovered are dropped, and the default
        # resend delay (1m) would hold the next copy back: resend on every evaluation.
        f"--rules.alert.resend-delay={interval}",
        "--log.level=warn",
    ]
    log = work_dir / "prometheus.log"
    with _run("prometheus", command, url, log, ready_timeout_s) as process:
        yield Prometheus("prometheus", process, url, log)


@contextmanager
def run_alertmanager(
    work_dir: Path,
    *,
    webhook_url: str,
    token: str,
    ready_timeout_s: float = 20.0,
) -> Iterator[Alertmanager]:
    """Alertmanager, clustering off, posting every alert and resolution to ``webhook_url``."""
    binary = require_binary(ALERTMANAGER)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "alertmanager.yml"
    config_file.write_text(json.dumps(alertmanager_config(webhook_url, token)))
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    log = work_dir / "alertmanager.log"
    with _run("alertmanager", command, url, log, ready_timeout_s) as process:
        yield Alertmanager("alertmanager", process, url, log)


# ------------------------------------------------------------------------ selfheal's side


def kb_session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``database_url`` with the knowledge base imported from runbooks/ (a fixture
    body: yields once, then disposes of the engine)."""
    with sessions(database_url) as factory:
        KnowledgeBase(factory).import_solutions(
            load_catalog(REPO / "runbooks", registry=default_registry())
        )
        yield factory


def intake_app(
    client: Client,
    task_queue: str,
    runbooks: Path,
    *,
    tokens: dict[str, list[str]],
) -> ServerHandle:
    """The intake app as ``selfheal serve`` builds it, served on a free loopback port."""
    deps = IntakeDeps(
        door=Healings(client, load_services(runbooks / "services.yaml"), task_queue=task_queue),
        settings=IntakeSettings(tokens=tokens),
        router=MetricsRouter(load_detector_config(runbooks / "detectors.yaml")),
    )
    return serve_in_thread(create_app(deps))
