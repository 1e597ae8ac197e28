"""Recovery actions, one module per target system, registered by name."""

from __future__ import annotations

from activities.actions.degrade import HTTP_DEGRADE
from activities.actions.http import HTTP_REQUEST
from activities.actions.kubernetes import KUBERNETES_ACTIONS
from activities.actions.postgres import POSTGRES_DSNS, POSTGRES_TERMINATE_BACKENDS
from activities.actions.process import PROCESS_RESTART, SUPERVISOR_URL
from activities.actions.redis import REDIS_DELETE_KEYS, REDIS_URL
from activities.actions.registry import Action, ActionContext, ActionRegistry
from activities.actions.wait import WAIT


def default_registry() -> ActionRegistry:
    """Every action selfheal knows. Drivers add themselves here."""
    return ActionRegistry(
        [
            PROCESS_RESTART,
            HTTP_REQUEST,
            WAIT,
            HTTP_DEGRADE,
            REDIS_DELETE_KEYS,
            POSTGRES_TERMINATE_BACKENDS,
            *KUBERNETES_ACTIONS,
        ]
    )


__all__ = [
    "POSTGRES_DSNS",
    "REDIS_URL",
    "SUPERVISOR_URL",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "default_registry",
]
