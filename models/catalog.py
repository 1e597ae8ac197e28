"""The solution catalog: runbook YAML files that hold a top-level ``solutions:`` list.

Every ``*.yaml``/``*.yml`` under the given directory is read; a file whose top-level key is not
``solutions`` (``rules.yaml``, ``services.yaml``) belongs to someone else and is skipped, except
under a ``solutions/`` folder, where it can only be a mistake. Errors name the file, the line,
the solution and the field: ``runbooks/solutions/demo.yaml:7: solutions[2] (flush-cache):
steps.0.action: Field required``. Indexes count from 0, like the ones pydantic reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from selfheal.core.yaml_source import Check, Problem, YamlDocument, read_yaml
from selfheal.domain import ConfigError, RecoveryStep, SelfhealError, SolutionSpec

CATALOG_KEY = "solutions"
SUFFIXES = (".yaml", ".yml")


class StepChecker(Protocol):
    """What the catalog needs of an action registry (``activities.actions.ActionRegistry``)."""

    def __contains__(self, name: object) -> bool: ...

    def check_step(self, step: RecoveryStep) -> None: ...


class SolutionFile(BaseModel):
    """One catalog file: nothing but its ``solutions:`` list (which may be empty)."""

    model_config = ConfigDict(extra="forbid")

    solutions: list[SolutionSpec]

    @field_validator("solutions", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


def load_catalog(path: Path, registry: StepChecker | None = None) -> list[SolutionSpec]:
    """Every solution under ``path`` (a directory, searched recursively, or one file).

    With ``registry``, every step must name a registered action and declare how it is undone.
    Solution names are unique across the whole catalog.
    """
    specs: list[SolutionSpec] = []
    first_seen: dict[str, str] = {}
    for file in catalog_files(path):
        document = read_yaml(file, what="solution catalog file")
        if not _is_catalog(document, required=_under_solutions_dir(file, path)):
            continue
        checks: list[Check[SolutionFile]] = [_unique_names(document, first_seen)]
        if registry is not None:
            checks.append(_steps_checker(registry))
        specs.extend(
            document.validate(
                SolutionFile, checks=checks, expected=f"a mapping with a '{CATALOG_KEY}:' list"
            ).solutions
        )
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


def _is_catalog(document: YamlDocument, *, required: bool) -> bool:
    """Whether ``document`` holds solutions; ``ConfigError`` if it must and does not."""
    if isinstance(document.data, dict) and CATALOG_KEY in document.data:
        return True
    if required:
        raise ConfigError(f"{document.source}:1: expected a top-level '{CATALOG_KEY}:' list")
    return False


def _unique_names(document: YamlDocument, first_seen: dict[str, str]) -> Check[SolutionFile]:
    """Names unique across files: ``first_seen`` maps a name to where it was first declared."""

    def check(catalog: SolutionFile) -> Iterator[Problem]:
        for index, spec in enumerate(catalog.solutions):
            at = (CATALOG_KEY, index, "name")
            if spec.name in first_seen:
                yield Problem(at, f"duplicate of {first_seen[spec.name]}")
            else:
                where = f"{document.source}:{document.line(at)}"
                first_seen[spec.name] = f"{where}: {CATALOG_KEY}[{index}] ({spec.name})"

    return check


def _steps_checker(registry: StepChecker) -> Check[SolutionFile]:
    """Every step names a registered action and declares how it is undone."""

    def check(catalog: SolutionFile) -> Iterator[Problem]:
        for index, spec in enumerate(catalog.solutions):
            for order, step in enumerate(spec.steps):
                try:
                    registry.check_step(step)
                except SelfhealError as exc:
                    at: tuple[int | str, ...] = (CATALOG_KEY, index, "steps", order)
                    if step.action not in registry:
                        at = (*at, "action")
                    elif step.compensate is not None and step.compensate.action not in registry:
                        at = (*at, "compensate", "action")
                    yield Problem(at, str(exc))

    return check
