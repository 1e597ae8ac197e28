"""Fold concurrent reports of one fault into one Temporal call, counting every report.

In an alert storm thousands of identical reports arrive together. Each caller joins the pending
batch of its key (the workflow id and the report's flags); one task per key sends the batch (a
``fired`` update carrying the batch's count) and every caller of that batch is answered once
that call has returned, so an acknowledgement still means "durably counted". Reports arriving
while a batch is being sent form the next batch. A failed call fails every caller of its batch,
and none of them is counted.

With ``interval_s``, a key's calls are at least that far apart: the first report of a quiet key
is sent at once, and a storm costs one call per interval (each report waits at most that long).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


@dataclass
class _Batch(Generic[P, R]):
    payload: P
    future: asyncio.Future[R]
    count: int = 0


@dataclass(frozen=True)
class Joined(Generic[R]):
    result: R
    coalesced: bool = False  # this report rode on a call made for another report


class Coalescer(Generic[P, R]):
    """``send(payload, count)`` once per batch; the first report's payload speaks for its key."""

    def __init__(
        self,
        send: Callable[[P, int], Awaitable[R]],
        *,
        interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval_s = interval_s
        self._clock = clock
        self._pending: dict[Hashable, _Batch[P, R]] = {}
        self._senders: dict[Hashable, asyncio.Task[None]] = {}
        self._last_sent: dict[Hashable, float] = {}  # recent sends only (pruned)
        self._slow: dict[Hashable, float] = {}  # keys that may wait longer between calls

    def slow_down(self, key: Hashable, interval_s: float | None) -> None:
        """Space ``key``'s calls by ``interval_s`` from now on (None: the default again)."""
        if interval_s is None:
            self._slow.pop(key, None)
        else:
            self._slow[key] = interval_s

    async def fire(self, key: Hashable, payload: P, count: int = 1) -> Joined[R]:
        batch = self._pending.get(key)
        coalesced = batch is not None
        if batch is None:
            batch = _Batch(payload, asyncio.get_running_loop().create_future())
            self._pending[key] = batch
            if key not in self._senders:
                self._senders[key] = asyncio.create_task(self._drain(key))
        batch.count += count
        # shielded: a caller that goes away must not cancel the call its batch shares
        return Joined(await asyncio.shield(batch.future), coalesced)

    async def _drain(self, key: Hashable) -> None:
        try:
            while key in self._pending:
                try:
                    await self._wait_turn(key)
                except BaseException as exc:  # cancelled while waiting: answer the batch
                    self._pending.pop(key).future.set_exception(exc)
                    raise
                batch = self._pending.pop(key)
                try:
                    result = await self._send(batch.payload, batch.count)
                except BaseException as exc:
                    # Cancelled too (the process stops): its callers must not wait for ever.
                    batch.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    batch.future.set_result(result)
        finally:
            del self._senders[key]

    async def _wait_turn(self, key: Hashable) -> None:
        """Until ``interval_s`` after this key's last send; reports keep joining meanwhile."""
        last = self._last_sent.get(key)
        interval = self._slow.get(key, self._interval_s)
        if last is not None:
            delay = last + interval - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
        now = self._clock()
        if self._interval_s > 0:
            self._last_sent[key] = now
            if len(self._last_sent) > 10_000:  # distinct faults: forget the ones long quiet
                horizon = now - max(self._interval_s, *self._slow.values(), 0.0)
                for old in [k for k, at in self._last_sent.items() if at < horizon]:
                    del self._last_sent[old]
                    self._slow.pop(old, None)
