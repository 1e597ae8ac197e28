"""The door into healings: the one client that reports faults, decides approvals, lists and shows
healings (``Healings``). Everything that starts or touches a healing goes through it."""

from selfheal.healings.door import Healings, Report, Verdict
from selfheal.healings.queries import FilterError, HealingRow

__all__ = ["FilterError", "HealingRow", "Healings", "Report", "Verdict"]
