"""The selfheal error hierarchy.

    SelfhealError
    ├── ConfigError            settings, runbook or catalog files that do not load
    ├── IntakeError            a signal from outside that cannot become a Fault, or a fault
    │                          the service catalog refuses
    ├── HealingError           a question or decision about one healing that cannot be answered
    │   ├── HealingNotFound    no healing has that id
    │   └── DecisionRefused    approve/reject refused (not awaiting approval, already ended)
    ├── TemporalUnavailable    Temporal (or, for a query, any worker) did not answer: retry later
    ├── TemporalRefused        Temporal answered no (a namespace or search attribute missing)
    ├── DiagnosisError         evidence could not be collected or no rule applies
    ├── KnowledgeBaseError     the Postgres knowledge base refused or failed
    ├── ActionError            a recovery action failed
    │   ├── ActionNotFound     no action of that name in the registry
    │   ├── InvalidParams      the params do not fit the action's model
    │   └── TargetError        the target system said no (retryable unless marked otherwise)
    └── ValidationFailed       the system did not become healthy within the window

Activities turn these into ``ApplicationError`` with ``type`` = the class name so that workflows
and operators see the same names; ``non_retryable`` follows ``retryable`` below.
"""

from __future__ import annotations


class SelfhealError(Exception):
    """Base of every error selfheal raises on purpose."""

    retryable: bool = True


class ConfigError(SelfhealError):
    retryable = False


class IntakeError(SelfhealError):
    retryable = False


class HealingError(SelfhealError):
    retryable = False


class HealingNotFound(HealingError):
    pass


class DecisionRefused(HealingError):
    pass


class TemporalUnavailable(SelfhealError):
    """Recognised by type where the client meets the server (``core.temporal``), never by the
    text of a message."""


class TemporalRefused(SelfhealError):
    retryable = False


class DiagnosisError(SelfhealError):
    pass


class KnowledgeBaseError(SelfhealError):
    pass


class ActionError(SelfhealError):
    pass


class ActionNotFound(ActionError):
    retryable = False


class InvalidParams(ActionError):
    retryable = False


class TargetError(ActionError):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ValidationFailed(SelfhealError):
    retryable = False
