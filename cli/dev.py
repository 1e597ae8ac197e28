"""``selfheal dev``: the dev stack (``selfheal.devstack``) on this machine, until Ctrl-C; with
``--demo SCENARIO``, inject a fault into the demo target, follow its healing, print the timeline
and exit 0 only if the fault was healed and the target's /healthz answers 200."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import typer
from rich.table import Table

from selfheal.cli.errors import fail, user_errors
from selfheal.cli.operator import release_clients
from selfheal.cli.render import Prelude, make_console, timeline_table
from selfheal.core.logging import configure_logging
from selfheal.core.settings import Settings, get_settings
from selfheal.devstack.demo.kubernetes import KUBE_SCENARIOS, KubeScenario, kubeconfig_problem
from selfheal.devstack.demo.scenarios import SCENARIOS, Scenario, UnknownScenario, get_scenario
from selfheal.devstack.processes import DevStackError
from selfheal.devstack.scenario_run import (
    AUTO_APPROVER,
    DemoFailed,
    DemoRun,
    run_kube_scenario,
    run_scenario,
)
from selfheal.devstack.stack import (
    DEV_TOKEN,
    INVENTORY_PROCESS,
    TARGET_PROCESS,
    WATCH_INTERVAL_S,
    Guard,
    Interrupted,
    Stack,
    dev_settings,
    operator_env,
    start_stack,
)
from selfheal.domain import SelfhealError

INTERRUPTED = 130

console = make_console()


def say(line: str) -> None:
    console.print(line, markup=False)


def _print_started(stack: Stack) -> None:
    from selfheal.models.base import display_url

    settings = stack.settings
    dev = settings.dev
    table = Table.grid(padding=(0, 2))
    table.add_row("Temporal", stack.temporal.address, f"UI {stack.temporal.ui_url}")
    table.add_row("Postgres", display_url(stack.database_url), "")
    table.add_row("knowledge base", stack.imported, "")
    table.add_row("service catalog", str(settings.runbooks_dir / "services.yaml"), "")
    table.add_row("worker", f"task queue {settings.temporal.task_queue}", "in this process")
    table.add_row(
        "supervisor", settings.supervisor.url, f"runs {TARGET_PROCESS}, {INVENTORY_PROCESS}"
    )
    table.add_row("checkout", stack.target_url, "/healthz /metrics POST /inject/<scenario>")
    table.add_row("inventory", stack.inventory_url, "checkout's dependency")
    table.add_row("demo cache", stack.cache.where, "")
    token = "SELFHEAL_INTAKE__TOKENS" if settings.intake.tokens else f"token {DEV_TOKEN}"
    table.add_row("intake", stack.intake_url, f"Alertmanager, OTLP, faults; {token}")
    if settings.kubernetes.kubeconfig is not None:
        table.add_row(
            "kubernetes", str(settings.kubernetes.kubeconfig), "demos: --demo k8s-bad-rollout ..."
        )
    table.add_row(
        "watcher",
        f"{stack.target_url}/healthz every {WATCH_INTERVAL_S:g}s",
        f"{stack.watcher.failure_threshold} failures start a healing",
    )
    console.print(f"selfheal dev is running; data in {dev.data_dir}")
    console.print(table)


def _print_try(stack: Stack) -> None:
    address = stack.temporal.address
    env = operator_env(stack.settings)
    submit_env = operator_env(stack.settings, catalog=True)
    lines = [
        "Try, in another terminal:",
        f"  curl -X POST {stack.target_url}/inject/crash      (scenarios: {', '.join(SCENARIOS)})",
        f"  echo '{{service: checkout, type: health_check_failed}}' "
        f"| {submit_env}selfheal fault submit -",
        f"  {env}selfheal list",
        f"  {env}selfheal show heal-<fingerprint>",
        f"  {env}selfheal approve heal-<fingerprint> --by you --reason 'looks right'",
        f"  temporal workflow list --address {address} --query \"WorkflowType='HealingWorkflow'\"",
        f"  open {stack.temporal.ui_url}",
        "Ctrl-C stops everything this command started.",
    ]
    console.print("\n".join(lines), markup=False)


async def _demo(
    stack: Stack, guard: Guard, scenario: Scenario, timeout_s: float, auto_approve: bool
) -> int:
    try:
        if isinstance(scenario, KubeScenario):
            run = await run_kube_scenario(
                stack, guard, scenario, timeout_s=timeout_s, auto_approve=auto_approve
            )
        else:
            run = await run_scenario(
                stack, guard, scenario, timeout_s=timeout_s, auto_approve=auto_approve
            )
    except DemoFailed as exc:
        console.print(f"demo failed: {exc}", markup=False, style="bold red")
        return 1
    prelude = Prelude(
        injected_at=run.injected_at,
        injected=f"{scenario.name}: {scenario.description}",
        first_failure_at=run.detection.first_failure_at,
    )
    console.print(timeline_table(run.status, prelude))
    return _verdict(run)


def _verdict(run: DemoRun) -> int:
    status, scenario, health = run.status, run.scenario, run.health
    diagnosed = status.diagnosis.root_cause if status.diagnosis else "none"
    match = "as expected" if run.diagnosed_as_expected else "expected " + scenario.root_cause
    say(f"root cause: {diagnosed} ({match})")
    say(run.checked or f"target /healthz: {health if health is not None else 'no answer'}")
    outcome = status.outcome.value if status.outcome else status.phase.value
    if run.healed:
        ttr = status.time_to_recover_s
        console.print(
            f"outcome: {outcome}" + (f" in {ttr:.1f}s after detection" if ttr is not None else ""),
            style="bold green",
            markup=False,
        )
        return 0
    console.print(f"outcome: {outcome}: {status.outcome_detail}", style="bold red", markup=False)
    return 1


# ------------------------------------------------------------------------------- the command


async def run_dev(
    settings: Settings, scenario: Scenario | None, *, timeout_s: float, auto_approve: bool
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    guard = Guard(stop, say)
    try:
        async with contextlib.AsyncExitStack() as exits:
            try:
                stack = await start_stack(settings, guard, exits)
                if scenario is None:
                    _print_started(stack)
                    _print_try(stack)
                    await guard.run(stop.wait())
                    code = 0
                else:
                    console.print(
                        f"running on {stack.temporal.address} (UI {stack.temporal.ui_url}), "
                        f"data in {settings.dev.data_dir}\nknowledge base: {stack.imported}",
                        markup=False,
                    )
                    code = await _demo(stack, guard, scenario, timeout_s, auto_approve)
            except Interrupted:
                code = INTERRUPTED
            console.print("stopping ...", markup=False)
            stop.set()
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _scenarios_table() -> Table:
    table = Table()
    for column in ("scenario", "what happens", "expected root cause", "heals by"):
        table.add_column(column)
    for s in SCENARIOS.values():
        table.add_row(s.name, s.description, s.root_cause, s.heals_by)
    for k in KUBE_SCENARIOS.values():
        table.add_row(k.name, f"{k.description} (needs --kubeconfig)", k.root_cause, k.heals_by)
    return table


def _scenario(name: str, kubeconfig: Path | None) -> Scenario:
    """The scenario called ``name``; a Kubernetes one only with a cluster to act on."""
    kube = KUBE_SCENARIOS.get(name)
    if kube is None:
        try:
            return get_scenario(name)
        except UnknownScenario as exc:
            fail(f"--demo: {exc}, " + ", ".join(KUBE_SCENARIOS) + " (with --kubeconfig)")
    if kubeconfig is None:
        fail(
            f"--demo {name} needs a cluster: give --kubeconfig PATH (for the local test control "
            "plane: bash .ci/k8s.sh && .ci/k8s/start-apiserver, then its run/kubeconfig)"
        )
    return kube


@user_errors
def dev(
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="state of every process (default: SELFHEAL_DEV__DATA_DIR, .selfheal)",
    ),
    demo: str | None = typer.Option(
        None, "--demo", help="inject SCENARIO, heal it, exit 0 if healed; 'list' lists them"
    ),
    timeout: float = typer.Option(
        180.0, "--timeout", min=1, help="seconds a demo may take, from injection to outcome"
    ),
    auto_approve: bool = typer.Option(
        False, "--auto-approve", help=f"approve a healing that asks for it (as {AUTO_APPROVER})"
    ),
    kubeconfig: Path | None = typer.Option(
        None,
        "--kubeconfig",
        help="act on this cluster (default: SELFHEAL_KUBERNETES__KUBECONFIG); enables the "
        "k8s-* demos",
    ),
) -> None:
    """Run Temporal, Postgres, the worker, the supervisor, a demo target and the watcher."""
    if demo == "list":
        console.print(_scenarios_table())
        return
    base = get_settings()
    if kubeconfig is not None:
        kubernetes = base.kubernetes.model_copy(update={"kubeconfig": kubeconfig.resolve()})
        base = base.model_copy(update={"kubernetes": kubernetes})
    if base.kubernetes.kubeconfig is not None:  # the flag's or SELFHEAL_KUBERNETES__KUBECONFIG
        problem = kubeconfig_problem(base.kubernetes.kubeconfig, base.kubernetes.context)
        if problem is not None:
            fail(problem)
    scenario = _scenario(demo, base.kubernetes.kubeconfig) if demo is not None else None
    settings = dev_settings(base, data_dir, demo=scenario is not None)
    configure_logging(settings.log_level, fmt=settings.log_format or "console")
    try:
        code = asyncio.run(
            run_dev(settings, scenario, timeout_s=timeout, auto_approve=auto_approve)
        )
    except (DevStackError, SelfhealError) as exc:
        release_clients()
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        code = INTERRUPTED
    release_clients()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)
