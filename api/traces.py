"""The most recent error spans this intake received, in memory, for ``/v1/traces/errors``:
bounded, newest first.

Diagnosis does not read these: the whole error traces go to the intake's trace sink
(``IntakeDeps.trace_sink``: ``models.trace_store.TraceStore.add`` in ``selfheal serve`` and
``selfheal dev``), in Postgres, where every worker reads them. This copy answers a person's
"what failed lately here?" without a database round trip, and still answers when no sink is
configured."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from selfheal.detection.parsers import ErrorSpan


class ErrorTraceStore:
    def __init__(self, max_spans: int) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans: expected at least 1, got {max_spans}")
        # appendleft on a bounded deque drops the oldest span once full
        self._spans: deque[ErrorSpan] = deque(maxlen=max_spans)
        # uvicorn may serve from several threads in tests (serve_in_thread) and bench
        self._lock = threading.Lock()

    def add(self, spans: Iterable[ErrorSpan]) -> None:
        with self._lock:
            for span in sorted(spans, key=lambda s: s.end):
                self._spans.appendleft(span)

    def recent_errors(self, service: str | None = None, limit: int = 50) -> list[ErrorSpan]:
        """Newest first; ``service`` None means every service."""
        with self._lock:
            found: list[ErrorSpan] = []
            for span in self._spans:
                if len(found) >= limit:
                    break
                if service is None or span.service == service:
                    found.append(span)
            return found

    def __len__(self) -> int:
        return len(self._spans)
