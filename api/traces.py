"""The most recent error spans, kept in memory for diagnosis: bounded, newest first."""

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
