"""``selfheal rca --prometheus``: a real Prometheus holding a known history (backfilled with
``promtool tsdb create-blocks-from openmetrics``, deterministic and fast) in which one service's
latency jumps at a known time; the command must rank it first."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from selfheal.cli.main import app
from tests.e2e.peers import require_binary, run_prometheus

STEP_S = 15
CATALOG = """\
services:
  - name: web
    depends_on: [api, db]
    evidence:
      metrics:
        queries:
          latency: 'demo_latency_seconds{service="${service}"}'
          requests: 'demo_requests{service="${service}"}'
  - name: api
  - name: db
"""


def history(fault_at: int) -> str:
    """An hour of 15 s samples for web, api and db until 10 minutes after ``fault_at``: db's
    latency jumps at ``fault_at``, web (which calls db) slows a little, api does not move."""
    rng = random.Random(42)
    families: dict[str, list[str]] = {"demo_latency_seconds": [], "demo_requests": []}
    for service, base, jump in (("web", 0.20, 0.05), ("api", 0.05, 0.0), ("db", 0.01, 0.40)):
        for t in range(fault_at - 3600, fault_at + 600, STEP_S):
            late = jump if t >= fault_at else 0.0
            latency = base + rng.gauss(0, base * 0.05) + late
            requests = 100 + rng.gauss(0, 3)
            families["demo_latency_seconds"].append(
                f'demo_latency_seconds{{service="{service}"}} {latency:.6f} {t}'
            )
            families["demo_requests"].append(
                f'demo_requests{{service="{service}"}} {requests:.3f} {t}'
            )
    lines: list[str] = []
    for name, samples in families.items():
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def test_the_service_that_jumped_ranks_first(tmp_path: Path) -> None:
    promtool = require_binary("/usr/bin/promtool")
    fault_at = (int(time.time()) // 60) * 60 - 3 * 3600  # well before Prometheus' own head
    source = tmp_path / "history.om"
    source.write_text(history(fault_at))
    work_dir = tmp_path / "prometheus"
    subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(work_dir / "data"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    catalog = tmp_path / "services.yaml"
    catalog.write_text(CATALOG)
    with run_prometheus(work_dir, scrape_targets=[], rules={"groups": []}) as prometheus:
        args = [
            "rca", "--prometheus", prometheus.url, "--service", "web", "--at", str(fault_at),
            "--window", "30m", "--after", "5m", "--catalog", str(catalog), "--json",
        ]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        ranking = json.loads(result.stdout)
        assert ranking[0]["service"] == "db"
        assert ranking[0]["metrics"][0]["metric"] == "latency"
        assert {item["service"] for item in ranking} == {"web", "api", "db"}

        # A fault time a day before the data: nothing to compare with, said on one line.
        early = CliRunner().invoke(app, [*args[:6], str(fault_at - 86400), *args[7:]])
        assert early.exit_code == 2
        assert early.stderr.startswith("error: --prometheus ")
        assert "no series around --at" in early.stderr
