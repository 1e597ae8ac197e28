"""Recovery actions, one module per target system, registered by name."""

from __future__ import annotations

from activities.actions.http import HTTP_REQUEST
from activities.actions.process import PROCESS_RESTART, SUPERVISOR_URL
from activities.actions.registry import Action, ActionContext, ActionRegistry
from activities.actions.wait import WAIT


def default_registry() -> ActionRegistry:
    """Every action selfheal knows. Drivers add themselves here."""
    return ActionRegistry([PROCESS_RESTART, HTTP_REQUEST, WAIT])


__all__ = ["SUPERVISOR_URL", "Action", "ActionContext", "ActionRegistry", "default_registry"]
