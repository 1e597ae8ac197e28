"""The door's fold of repeated reports: at most one call per key per interval, every report
counted once, and no caller left waiting when the process stops."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from selfheal.healings.coalesce import Coalescer

INTERVAL = 0.2


async def test_a_storm_costs_one_call_per_interval_and_counts_every_report() -> None:
    calls: list[tuple[float, int]] = []

    async def send(key: str, count: int) -> str:
        calls.append((time.monotonic(), count))
        return key

    coalescer: Coalescer[str, str] = Coalescer(send, interval_s=INTERVAL)
    started = time.monotonic()
    reports = []
    for _ in range(60):  # 0.6 s of storm, a report every 10 ms
        reports.append(asyncio.create_task(coalescer.fire("heal-a", "heal-a")))
        await asyncio.sleep(0.01)
    results = await asyncio.gather(*reports)
    assert sum(count for _, count in calls) == 60  # nothing lost, nothing counted twice
    assert calls[0][0] - started < INTERVAL / 2  # the first report is not held back
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert all(gap >= INTERVAL * 0.95 for gap in gaps), gaps
    assert len(calls) <= 0.6 / INTERVAL + 2
    assert sum(not r.coalesced for r in results) == len(calls)


async def test_other_keys_are_not_held_back() -> None:
    sent: dict[str, float] = {}

    async def send(key: str, count: int) -> None:
        sent[key] = time.monotonic()

    coalescer: Coalescer[str, None] = Coalescer(send, interval_s=INTERVAL)
    await coalescer.fire("a", "a")
    started = time.monotonic()
    await coalescer.fire("b", "b")  # another fingerprint: at once, whatever "a" did
    assert sent["b"] - started < INTERVAL / 2


async def test_callers_waiting_for_their_turn_are_answered_when_cancelled() -> None:
    async def send(key: str, count: int) -> None:
        return None

    coalescer: Coalescer[str, None] = Coalescer(send, interval_s=5.0)
    await coalescer.fire("a", "a")
    waiting = asyncio.create_task(coalescer.fire("a", "a"))  # must wait ~5 s for its turn
    await asyncio.sleep(0.05)
    for task in list(coalescer._senders.values()):
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 1)


async def test_a_slowed_key_waits_its_own_interval() -> None:
    sent: list[float] = []

    async def send(key: str, count: int) -> None:
        sent.append(time.monotonic())

    coalescer: Coalescer[str, None] = Coalescer(send, interval_s=0.05)
    coalescer.slow_down("a", 0.3)  # e.g. a healing that only counts repeats now
    for _ in range(3):
        await coalescer.fire("a", "a")
    assert [round(b - a, 1) >= 0.3 for a, b in itertools.pairwise(sent)] == [True, True]
    coalescer.slow_down("a", None)
    started = time.monotonic()
    await coalescer.fire("a", "a")
    await coalescer.fire("a", "a")
    assert time.monotonic() - started < 0.3  # back to the default interval
