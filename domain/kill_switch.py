"""The global kill switch, as the intake and the CLI see it: a state and a way to set it.

Storage lives in ``models.guardrails``; the intake gets an implementation from the CLI that
builds it, so ``detection`` never imports ``models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pydantic import BaseModel


class PauseState(BaseModel):
    """The kill switch. ``by``/``at``/``reason`` describe its last change."""

    paused: bool
    reason: str = ""
    by: str = ""
    at: datetime | None = None


class KillSwitch(Protocol):
    """Blocking calls (run them off the event loop); raise KnowledgeBaseError on failure."""

    def state(self) -> PauseState: ...

    def set(self, paused: bool, by: str, reason: str = "") -> PauseState: ...
