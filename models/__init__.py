"""The Postgres knowledge base: typed ORM tables and the ``KnowledgeBase`` repository.

Only activities and the CLI touch it; workflows never import it.
"""

from models.base import Base
from models.catalog import load_catalog
from models.guardrails import Guardrails, PauseState, set_paused
from models.knowledge_base import HealingRecord, HealingStepRecord, ImportReport, KnowledgeBase
from models.tables import HealingRow, HealingStepRow, SolutionRow

__all__ = [
    "Base",
    "Guardrails",
    "HealingRecord",
    "HealingRow",
    "HealingStepRecord",
    "HealingStepRow",
    "ImportReport",
    "KnowledgeBase",
    "PauseState",
    "SolutionRow",
    "load_catalog",
    "set_paused",
]
