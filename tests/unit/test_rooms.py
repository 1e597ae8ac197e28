"""The rooms and what each may import (docs/architecture.md), held against the code: every
``import selfheal.<room>`` of every module, function-level imports included."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

EVERY_ROOM = frozenset(
    {
        "domain", "workflows", "activities", "models", "migrations", "worker", "healings", "api",
        "detection", "diagnosis", "core", "devstack", "cli",
    }
)  # fmt: skip

# room -> the rooms (or ``room.module``) it may import; itself always
MAY_IMPORT: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "workflows": frozenset({"domain"}),
    "core": frozenset({"domain", "workflows.contract"}),
    "models": frozenset({"domain", "core"}),
    "migrations": frozenset({"models", "core"}),
    "activities": frozenset(
        {"domain", "models", "core", "diagnosis", "detection", "workflows.contract"}
    ),
    "detection": frozenset({"domain", "core"}),
    "diagnosis": frozenset({"domain", "core"}),
    "healings": frozenset({"domain", "core", "workflows"}),
    "api": frozenset({"healings", "detection", "domain", "core"}),
    # the worker hosts report_prediction, the one activity that is a client of the door
    "worker": frozenset({"activities", "core", "domain", "models", "workflows", "healings"}),
    "devstack": EVERY_ROOM - {"cli"},
    "cli": EVERY_ROOM,
    "bench": EVERY_ROOM,
}
# Libraries that do I/O: the workflow sandbox re-imports them per run (slow), and a workflow
# must not touch the world anyway.
WORKFLOW_FORBIDDEN = ("sqlalchemy", "httpx", "kubernetes", "redis", "psycopg", "fastapi")


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def allowed(room: str, module: str) -> bool:
    parts = module.split(".")
    if parts[0] == "tests":
        return False  # no room, and not bench either, may import the tests
    if parts[0] != "selfheal" or len(parts) < 2 or parts[1] == room:
        return True
    rules = MAY_IMPORT[room]
    return parts[1] in rules or ".".join(parts[1:3]) in rules


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_what_it_may(room: str) -> None:
    files = sorted((REPO / room).rglob("*.py"))
    assert files, f"room {room} has no modules"
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in imports(path)
        if not allowed(room, module)
    ]
    assert wrong == [], f"{room} may import only {sorted(MAY_IMPORT[room])}"


def test_workflows_import_no_io_library() -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in sorted((REPO / "workflows").rglob("*.py"))
        for line, module in imports(path)
        if module.split(".")[0] in WORKFLOW_FORBIDDEN
    ]
    assert wrong == []


def test_every_room_is_installed_under_selfheal() -> None:
    links = {p.name for p in (REPO / "selfheal").iterdir() if p.is_symlink()}
    assert EVERY_ROOM <= links, "selfheal/ must link every room (and pyproject map it)"
    pyproject = (REPO / "pyproject.toml").read_text()
    for room in EVERY_ROOM:
        assert f'"selfheal.{room}" = "{room}"' in pyproject, room


def test_no_module_imports_a_room_by_its_bare_name() -> None:
    # In a checkout `import models` would work from the repository's root and hide a missing
    # `selfheal.` prefix until installed: refuse it everywhere.
    bare = EVERY_ROOM | {"demo", "supervisor"}
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for folder in [*sorted(EVERY_ROOM), "bench", "tests"]
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, module in imports(path)
        if module.split(".")[0] in bare
    ]
    assert wrong == []
