"""Recovery actions, one module per target system, registered by name."""

from __future__ import annotations

from selfheal.activities.actions.degrade import HTTP_DEGRADE
from selfheal.activities.actions.http import HTTP_REQUEST
from selfheal.activities.actions.kubernetes import KUBERNETES_ACTIONS
from selfheal.activities.actions.postgres import POSTGRES_DSNS, POSTGRES_TERMINATE_BACKENDS
from selfheal.activities.actions.process import PROCESS_RESTART, SUPERVISOR_URL
from selfheal.activities.actions.redis import REDIS_DELETE_KEYS, REDIS_URL
from selfheal.activities.actions.registry import Action, ActionContext, ActionRegistry
from selfheal.activities.actions.wait import WAIT


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
