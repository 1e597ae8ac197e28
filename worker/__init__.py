"""The selfheal Temporal worker."""

from selfheal.worker.build import build_activities, build_worker, run_worker, workflow_runner

__all__ = ["build_activities", "build_worker", "run_worker", "workflow_runner"]
