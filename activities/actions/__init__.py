"""Recovery actions, one module per target system, registered by name."""

from __future__ import annotations

from activities.actions.registry import Action, ActionContext, ActionRegistry


def default_registry() -> ActionRegistry:
    """Every action selfheal knows. Drivers add themselves here."""
    registry = ActionRegistry()
    return registry


__all__ = ["Action", "ActionContext", "ActionRegistry", "default_registry"]
