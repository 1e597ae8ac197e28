"""Load the service catalog (``runbooks/services.yaml``) and resolve a fault's target through it.

Labels never choose a target. ``resolve_fault`` accepts a fault only for a service of the
catalog and a target that service declares (or its default target), then takes everything that
says *where* to act from the catalog: the target's ``health_url``, and the labels in
``CATALOG_LABELS``, which are overwritten (or removed when the target declares none) so that an
alert carrying ``base_url: http://elsewhere`` never steers an action.

Fingerprints: a fingerprint derived from service, type and target is derived again from the
resolved target. An explicit upstream fingerprint (Alertmanager's) is kept readable but scoped to
the resolved target, ``<upstream>-<target>``, so two targets never share a healing; a target name
that is not fingerprint-safe or long becomes ``t<sha256[:12]>``. Resolving twice changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from selfheal.core.yaml_source import UniqueKeyLoader, line_of
from selfheal.domain import ConfigError, Fault, IntakeError
from selfheal.domain.fault import fingerprint_of
from selfheal.domain.services import ServiceCatalog, ServiceSpec, TargetSpec

# Names end up quoted in Temporal visibility queries and in workflow ids: keep them plain.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
CATALOG_LABELS = ("base_url", "namespace")

_SAFE_SUFFIX = re.compile(r"^[A-Za-z0-9._:-]{1,40}$")
_FINGERPRINT_MAX = 128
_LOC = list[int | str]


# ----------------------------------------------------------------------------------- loading


def load_services(path: Path) -> ServiceCatalog:
    """Read and check a service catalog. Errors name the file, line and field: ``ConfigError``.

    Beyond the model: service and target names are plain and unique, ``default_target`` names a
    target of its service, ``depends_on`` names services of the catalog, and no service depends
    on itself, directly or not.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the service catalog: {reason}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping with a 'services' list")
    try:
        catalog = ServiceCatalog.model_validate(data)
    except ValidationError as exc:
        problems = [
            _locate(path, root, data, list(item["loc"]), item["msg"]) for item in exc.errors()[:5]
        ]
        more = len(exc.errors()) - len(problems)
        raise ConfigError(
            "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
        ) from None
    problem = _first_problem(catalog)
    if problem is not None:
        loc, message = problem
        raise ConfigError(_locate(path, root, data, loc, message))
    return catalog


def _first_problem(catalog: ServiceCatalog) -> tuple[_LOC, str] | None:
    known = [service.name for service in catalog.services]
    seen: set[str] = set()
    for index, service in enumerate(catalog.services):
        at: _LOC = ["services", index]
        if not NAME.match(service.name):
            return [*at, "name"], f"expected {NAME_RULE}; got {service.name!r}"
        if service.name in seen:
            return [*at, "name"], f"service {service.name!r} is declared twice"
        seen.add(service.name)
        targets: set[str] = set()
        for t_index, target in enumerate(service.targets):
            if target.name in targets:
                return [*at, "targets", t_index, "name"], f"target {target.name!r} appears twice"
            targets.add(target.name)
        if service.default_target is not None and service.default_target not in targets:
            return [*at, "default_target"], (
                f"{service.default_target!r} is not a target of {service.name!r} "
                f"(targets: {_names(sorted(targets))})"
            )
        for d_index, dependency in enumerate(service.depends_on):
            if dependency not in known:
                return [*at, "depends_on", d_index], (
                    f"unknown service {dependency!r} (known: {_names(known)})"
                )
    for index, service in enumerate(catalog.services):
        cycle = _cycle_from(catalog, service.name)
        if cycle is not None:
            return ["services", index, "depends_on"], "dependency cycle: " + " -> ".join(cycle)
    return None


def _cycle_from(catalog: ServiceCatalog, start: str) -> list[str] | None:
    """A path start -> ... -> start through depends_on, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        name, path = stack.pop()
        spec = catalog.get(name)
        for dependency in spec.depends_on if spec is not None else []:
            if dependency == start:
                return [*path, start]
            if dependency not in visited:
                visited.add(dependency)
                stack.append((dependency, [*path, dependency]))
    return None


def _locate(path: Path, root: yaml.Node | None, data: Any, loc: _LOC, message: str) -> str:
    """``file:line: services[i] (name).field: message`` for the deepest node on ``loc``."""
    subject = ""
    if len(loc) >= 2 and loc[0] == "services" and isinstance(loc[1], int):
        services = data.get("services") if isinstance(data, dict) else None
        item = services[loc[1]] if isinstance(services, list) and loc[1] < len(services) else None
        name = item.get("name") if isinstance(item, dict) else None
        subject = f"services[{loc[1]}]" + (f" ({name})" if isinstance(name, str) else "")
        rest = loc[2:]
    else:
        rest = loc
    field = ".".join(str(part) for part in rest)
    where = ".".join(part for part in (subject, field) if part) or "(file)"
    text = message.removeprefix("Value error, ")
    return f"{path}:{line_of(root, loc)}: {where}: {text}"


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


# --------------------------------------------------------------------------------- resolving


def resolve_fault(fault: Fault, catalog: ServiceCatalog) -> Fault:
    """The fault with its target, health URL, catalog labels and fingerprint from the catalog.

    Raises ``IntakeError`` with the reason for an unknown service, a target the service does
    not declare, or a service that declares no target at all.
    """
    service = catalog.get(fault.service)
    if service is None:
        known = _names(sorted(s.name for s in catalog.services))
        raise IntakeError(f"unknown service {fault.service!r} (known: {known})")
    target = _target_of(fault, service)
    labels = {k: v for k, v in fault.labels.items() if k not in CATALOG_LABELS}
    for key, value in (("base_url", target.base_url), ("namespace", target.namespace)):
        if value is not None:
            labels[key] = value
    derived = fault.fingerprint == fingerprint_of(fault.service, fault.type, fault.target)
    fingerprint = (
        fingerprint_of(fault.service, fault.type, target.name)
        if derived
        else scoped_fingerprint(fault.fingerprint, target.name)
    )
    return fault.model_copy(
        update={
            "target": target.name,
            "health_url": target.health_url,
            # Validation fetches the metric's URL: one that came from outside is never fetched.
            "metric": None,
            "labels": labels,
            "fingerprint": fingerprint,
        }
    )


def _target_of(fault: Fault, service: ServiceSpec) -> TargetSpec:
    allowed = _names([t.name for t in service.targets])
    if not service.targets:
        raise IntakeError(f"service {service.name!r} declares no target selfheal may act on")
    target = service.target(fault.target)
    if target is None:
        if fault.target:
            raise IntakeError(
                f"target {fault.target!r} is not a target of service {service.name!r} "
                f"(allowed: {allowed})"
            )
        raise IntakeError(
            f"default target {service.default_target!r} of service {service.name!r} "
            f"is not one of its targets ({allowed})"
        )
    return target


def scoped_fingerprint(upstream: str, target: str) -> str:
    """``upstream`` bound to ``target``: ``<upstream>-<target>``, within 128 fingerprint-safe
    characters. Idempotent: a fingerprint already scoped to ``target`` is returned as is."""
    suffix = target if _SAFE_SUFFIX.match(target) else "t" + _sha(target)[:12]
    if upstream.endswith(f"-{suffix}"):
        return upstream
    if len(upstream) + 1 + len(suffix) > _FINGERPRINT_MAX:
        upstream = f"{upstream[:70]}{_sha(upstream)[:16]}"
    return f"{upstream}-{suffix}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
