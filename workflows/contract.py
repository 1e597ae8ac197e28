"""The Temporal contract of a healing: every name that crosses the wire between the workflow and
its clients (the door, the CLI, the ``temporal`` CLI, the dev stack) and its activities.

One module, imported by the workflow and by every client, so that a name is written once:

- the workflow type, task queue and id scheme;
- the names of its query, signals and updates (clients may also name the handlers by method,
  ``HealingWorkflow.approve``; the names here are for places that only have a string, such as
  ``start_signal`` or the ``temporal`` CLI);
- the search attribute keys, typed;
- a typed reference to every activity (``RUN_STEP``, ...): its name, input and result types. The
  workflow calls an activity through its reference (``await RUN_STEP.execute(input, ...)``) and
  every implementation, real or stand-in, declares the reference it implements
  (``@implements(RUN_STEP)``), so that a renamed activity or a changed payload is a mypy error
  on both sides, not a failure at run time.

Pure: importing it does no I/O (the workflow sandbox imports it for every run), which is why the
workflow cannot name the activity methods themselves (``StepActivities.run_step``): their
modules import SQLAlchemy, httpx and kubernetes.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

from selfheal.domain import (
    Diagnosis,
    Evidence,
    HealingPolicy,
    StepResult,
    ValidationResult,
)
from selfheal.domain.forecast import (
    ChooseWindowInput,
    ChosenWindow,
    Prediction,
    ReportPredictionInput,
    ReportPredictionResult,
    RunForecastInput,
)
from selfheal.domain.payloads import (
    CheckGuardrailsInput,
    CollectEvidenceInput,
    CompensateStepInput,
    DiagnoseInput,
    FindSolutionsInput,
    FindSolutionsResult,
    GuardrailDecision,
    LoadPolicyInput,
    NotifyInput,
    ProbeDependencyInput,
    ProbeDependencyResult,
    RecordOutcomeInput,
    RecordOutcomeResult,
    ReleaseTargetInput,
    RunStepInput,
    ValidateRecoveryInput,
    WatchSideEffectsInput,
    WatchSideEffectsResult,
)

TASK_QUEUE = "selfheal"
WORKFLOW_TYPE = "HealingWorkflow"
FORECAST_WORKFLOW = "ForecastWorkflow"
"""started by the Schedule of a forecast rule (``forecast_schedule_id``), id ``forecast-<rule>``"""
FORECAST_ID_PREFIX = "forecast-"


def forecast_schedule_id(rule: str) -> str:
    """The Temporal Schedule of a forecast rule, and the id its workflows start with."""
    return FORECAST_ID_PREFIX + rule


QUERY_STATUS = "status"
SIGNAL_FAULT_UPDATE = "fault_update"
UPDATE_APPROVE = "approve"
UPDATE_REJECT = "reject"
# Signals of the same names as the updates exist for clients that cannot send updates.
SIGNAL_APPROVE = UPDATE_APPROVE
SIGNAL_REJECT = UPDATE_REJECT

PHASE = SearchAttributeKey.for_keyword("HealingPhase")
FAULT_SERVICE = SearchAttributeKey.for_keyword("FaultService")
FAULT_TYPE = SearchAttributeKey.for_keyword("FaultType")
ROOT_CAUSE = SearchAttributeKey.for_keyword("RootCause")
RISK_LEVEL = SearchAttributeKey.for_keyword("RiskLevel")
OUTCOME = SearchAttributeKey.for_keyword("HealingOutcome")

SEARCH_ATTRIBUTE_KEYS: tuple[SearchAttributeKey[Any], ...] = (
    PHASE,
    FAULT_SERVICE,
    FAULT_TYPE,
    ROOT_CAUSE,
    RISK_LEVEL,
    OUTCOME,
)
"""Every key a healing sets (all Keyword), registered by ``selfheal dev`` and documented for
real clusters."""

SEARCH_ATTRIBUTES: tuple[str, ...] = tuple(key.name for key in SEARCH_ATTRIBUTE_KEYS)


# ---------------------------------------------------------------------------------- activities

InputT = TypeVar("InputT")
ResultT = TypeVar("ResultT")
SelfT = TypeVar("SelfT")

_REF_ATTR = "__selfheal_activity_ref__"


@dataclass(frozen=True)
class ActivityRef(Generic[InputT, ResultT]):
    """An activity as both sides see it: its name on the wire, its one input, its result.

    The types are the exact wire types: the workflow decodes results as ``result_type`` and the
    worker decodes inputs as the implementation's annotation, which :func:`implements` checks is
    ``input_type``.
    """

    name: str
    input_type: type[InputT]
    result_type: type[ResultT]

    async def execute(
        self,
        arg: InputT,
        *,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> ResultT:
        """Run the activity and wait for its result. Workflow code only."""
        result: ResultT = await workflow.execute_activity(
            self.name,
            arg,
            result_type=self.result_type,
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry_policy,
        )
        return result

    def start(
        self,
        arg: InputT,
        *,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        cancellation_type: workflow.ActivityCancellationType = (
            workflow.ActivityCancellationType.TRY_CANCEL
        ),
    ) -> workflow.ActivityHandle[ResultT]:
        """Start the activity and return its handle (a task), for one that runs beside others
        until cancelled. Workflow code only."""
        handle: workflow.ActivityHandle[ResultT] = workflow.start_activity(
            self.name,
            arg,
            result_type=self.result_type,
            start_to_close_timeout=start_to_close_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry_policy,
            cancellation_type=cancellation_type,
        )
        return handle


LOAD_POLICY = ActivityRef("load_policy", LoadPolicyInput, HealingPolicy)
COLLECT_EVIDENCE = ActivityRef("collect_evidence", CollectEvidenceInput, Evidence)
DIAGNOSE_FAULT = ActivityRef("diagnose_fault", DiagnoseInput, Diagnosis)
FIND_SOLUTIONS = ActivityRef("find_solutions", FindSolutionsInput, FindSolutionsResult)
RUN_STEP = ActivityRef("run_step", RunStepInput, StepResult)
COMPENSATE_STEP = ActivityRef("compensate_step", CompensateStepInput, StepResult)
VALIDATE_RECOVERY = ActivityRef("validate_recovery", ValidateRecoveryInput, ValidationResult)
RECORD_OUTCOME = ActivityRef("record_outcome", RecordOutcomeInput, RecordOutcomeResult)
NOTIFY = ActivityRef("notify", NotifyInput, bool)
CHECK_GUARDRAILS = ActivityRef("check_guardrails", CheckGuardrailsInput, GuardrailDecision)
RELEASE_TARGET = ActivityRef("release_target", ReleaseTargetInput, type(None))
WATCH_SIDE_EFFECTS = ActivityRef(
    "watch_side_effects", WatchSideEffectsInput, WatchSideEffectsResult
)
PROBE_DEPENDENCY = ActivityRef("probe_dependency", ProbeDependencyInput, ProbeDependencyResult)
RUN_FORECAST = ActivityRef("run_forecast", RunForecastInput, Prediction)
CHOOSE_WINDOW = ActivityRef("choose_window", ChooseWindowInput, ChosenWindow)
REPORT_PREDICTION = ActivityRef("report_prediction", ReportPredictionInput, ReportPredictionResult)

ACTIVITIES: tuple[ActivityRef[Any, Any], ...] = (
    LOAD_POLICY,
    COLLECT_EVIDENCE,
    DIAGNOSE_FAULT,
    FIND_SOLUTIONS,
    RUN_STEP,
    COMPENSATE_STEP,
    VALIDATE_RECOVERY,
    RECORD_OUTCOME,
    NOTIFY,
    CHECK_GUARDRAILS,
    RELEASE_TARGET,
    WATCH_SIDE_EFFECTS,
    PROBE_DEPENDENCY,
    RUN_FORECAST,
    CHOOSE_WINDOW,
    REPORT_PREDICTION,
)
"""Every activity the workflows may call: a worker registers one implementation of each."""


class _Implements(Generic[InputT, ResultT]):
    def __init__(self, ref: ActivityRef[InputT, ResultT]) -> None:
        self.ref = ref

    # A method (``self`` first) or a plain function; mypy rejects one whose input or result type
    # differs from the reference's.
    @overload
    def __call__(
        self, fn: Callable[[SelfT, InputT], Awaitable[ResultT]]
    ) -> Callable[[SelfT, InputT], Awaitable[ResultT]]: ...

    @overload
    def __call__(
        self, fn: Callable[[InputT], Awaitable[ResultT]]
    ) -> Callable[[InputT], Awaitable[ResultT]]: ...

    def __call__(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        _check_annotations(self.ref, fn)
        setattr(fn, _REF_ATTR, self.ref)
        return activity.defn(name=self.ref.name)(fn)


def implements(ref: ActivityRef[InputT, ResultT]) -> _Implements[InputT, ResultT]:
    """Declare an activity implementation of ``ref``: ``activity.defn`` under the reference's
    name, once its annotations are checked to be exactly the reference's types (stand-ins in
    tests and benchmarks are not type-checked, and the worker decodes the input as annotated)."""
    return _Implements(ref)


def _check_annotations(ref: ActivityRef[Any, Any], fn: Callable[..., Any]) -> None:
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self" and params[0].name not in hints:
        params = params[1:]
    inputs = [hints.get(param.name) for param in params]
    result = hints.get("return")
    if inputs != [ref.input_type] or result is not ref.result_type:
        declared = ", ".join(getattr(t, "__name__", repr(t)) for t in inputs)
        raise TypeError(
            f"{fn.__qualname__} implements activity {ref.name!r}, "
            f"({ref.input_type.__name__}) -> {ref.result_type.__name__}, "
            f"but is declared ({declared}) -> {getattr(result, '__name__', repr(result))}"
        )


def implemented_by(fn: Callable[..., Any]) -> ActivityRef[Any, Any] | None:
    """The reference ``fn`` (a function or a bound method) was declared to implement, if any."""
    ref = getattr(fn, _REF_ATTR, None)
    return ref if isinstance(ref, ActivityRef) else None


def check_implementations(activities: Iterable[Callable[..., Any]]) -> None:
    """Raise ``ValueError`` unless ``activities`` hold exactly one implementation of every
    reference in :data:`ACTIVITIES`, each declared with :func:`implements`, and nothing else."""
    counts = {ref.name: 0 for ref in ACTIVITIES}
    undeclared: list[str] = []
    for fn in activities:
        ref = implemented_by(fn)
        if ref is None or ref.name not in counts:
            undeclared.append(getattr(fn, "__qualname__", repr(fn)))
        else:
            counts[ref.name] += 1
    problems = [f"no implementation of {name!r}" for name, n in counts.items() if n == 0]
    problems += [f"{n} implementations of {name!r}" for name, n in counts.items() if n > 1]
    problems += [f"{name} implements no activity of the contract" for name in undeclared]
    if problems:
        raise ValueError("activities do not match the contract: " + "; ".join(problems))
