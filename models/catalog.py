"""The solution catalog: runbook YAML files that hold a top-level ``solutions:`` list.

Every ``*.yaml``/``*.yml`` under the given directory is read; a file whose top-level key is not
``solutions`` (``rules.yaml``, ``services.yaml``) belongs to someone else and is skipped, except
under a ``solutions/`` folder, where it can only be a mistake. Errors name the file, the solution
and the field: ``runbooks/solutions/demo.yaml: solutions[2] (flush-cache).steps.0.action: Field
required``. Solution indexes count from 0, like the step indexes pydantic reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from selfheal.domain import ConfigError, RecoveryStep, SelfhealError, SolutionSpec

CATALOG_KEY = "solutions"
SUFFIXES = (".yaml", ".yml")


class StepChecker(Protocol):
    """What the catalog needs of an action registry (``activities.actions.ActionRegistry``)."""

    def __contains__(self, name: object) -> bool: ...

    def check_step(self, step: RecoveryStep) -> None: ...


def load_catalog(path: Path, registry: StepChecker | None = None) -> list[SolutionSpec]:
    """Every solution under ``path`` (a directory, searched recursively, or one file).

    With ``registry``, every step must name a registered action and declare how it is undone.
    Solution names are unique across the whole catalog.
    """
    specs: list[SolutionSpec] = []
    first_seen: dict[str, str] = {}
    for file in catalog_files(path):
        for index, spec in enumerate(_load_file(file, required=_under_solutions_dir(file, path))):
            where = f"{file}: {_where(index, spec.name)}"
            if spec.name in first_seen:
                raise ConfigError(f"{where}.name: duplicate of {first_seen[spec.name]}")
            first_seen[spec.name] = where
            if registry is not None:
                _check_steps(spec, registry, where)
            specs.append(spec)
    return specs


def catalog_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path}: no such catalog file or directory")
    return sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def _under_solutions_dir(file: Path, root: Path) -> bool:
    if root.is_file():
        return True
    return CATALOG_KEY in file.relative_to(root).parts[:-1]


def _load_file(file: Path, *, required: bool) -> list[SolutionSpec]:
    document = _read_yaml(file)
    if not isinstance(document, dict) or CATALOG_KEY not in document:
        if required:
            raise ConfigError(f"{file}: expected a top-level '{CATALOG_KEY}:' list")
        return []
    unexpected = sorted(str(key) for key in document if key != CATALOG_KEY)
    if unexpected:
        raise ConfigError(
            f"{file}: unexpected top-level key {', '.join(map(repr, unexpected))} "
            f"(a catalog file holds only '{CATALOG_KEY}:')"
        )
    items = document[CATALOG_KEY] or []
    if not isinstance(items, list):
        raise ConfigError(f"{file}: {CATALOG_KEY}: expected a list of solutions")
    return [_parse_solution(file, index, item) for index, item in enumerate(items)]


def _read_yaml(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: invalid YAML{at}: {problem}") from exc


def _parse_solution(file: Path, index: int, item: Any) -> SolutionSpec:
    name = item.get("name") if isinstance(item, dict) else None
    where = _where(index, name if isinstance(name, str) else None)
    if not isinstance(item, dict):
        raise ConfigError(f"{file}: {where}: expected a mapping with name, pattern and steps")
    try:
        return SolutionSpec.model_validate(item)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}.{loc}: {error['msg']}" if loc else f"{where}: {error['msg']}")
        raise ConfigError(f"{file}: " + "; ".join(problems)) from exc


def _check_steps(spec: SolutionSpec, registry: StepChecker, where: str) -> None:
    for order, step in enumerate(spec.steps):
        try:
            registry.check_step(step)
        except SelfhealError as exc:
            if step.action not in registry:
                field = ".action"
            elif step.compensate is not None and step.compensate.action not in registry:
                field = ".compensate.action"
            else:
                field = ""
            raise ConfigError(f"{where}.steps.{order}{field}: {exc}") from exc


def _where(index: int, name: str | None) -> str:
    return f"{CATALOG_KEY}[{index}] ({name})" if name else f"{CATALOG_KEY}[{index}]"
