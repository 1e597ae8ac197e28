"""The Postgres knowledge base: typed ORM tables and the ``KnowledgeBase`` repository.

Only activities and the CLI touch it; workflows never import it.
"""

from selfheal.models.base import Base
from selfheal.models.catalog import load_catalog
from selfheal.models.evidence import MetricSampleRow, TraceSpanRow
from selfheal.models.guardrails import Guardrails, PauseState, set_paused
from selfheal.models.knowledge_base import (
    HealingRecord,
    HealingStepRecord,
    ImportReport,
    KnowledgeBase,
)
from selfheal.models.tables import HealingRow, HealingStepRow, SolutionRow

__all__ = [
    "Base",
    "Guardrails",
    "HealingRecord",
    "HealingRow",
    "HealingStepRecord",
    "HealingStepRow",
    "ImportReport",
    "KnowledgeBase",
    "MetricSampleRow",
    "PauseState",
    "SolutionRow",
    "TraceSpanRow",
    "load_catalog",
    "set_paused",
]
