"""The one door for YAML that operators write (rules, services, detectors, solutions).

``load_yaml(path, Model)`` reads a file, refuses a key given twice (it would silently drop half of
what it holds), validates it into ``Model`` and raises ``ConfigError`` with every problem located
as ``file:LINE: where: field: problem``, where ``where`` names the item of a top-level list by
index and name (``services[2] (checkout)``). Checks that go beyond the model (names unique across
items, references between items) return problems with a location too, so that they read the same.

``read_yaml`` and ``YamlDocument.validate`` are the two halves, for a caller that must look at a
document before deciding what it is (a directory of mixed runbook files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog
import yaml
from pydantic import BaseModel, ValidationError

from selfheal.domain import ConfigError

M = TypeVar("M", bound=BaseModel)
_log = structlog.get_logger(__name__)
Loc = tuple[int | str, ...]

MAX_PROBLEMS = 5
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Problem:
    """What is wrong (``message``) and where in the document (``loc``, pydantic's shape)."""

    loc: Loc
    message: str


Check = Callable[[M], Iterable[Problem]]
ErrorFilter = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Rewrites a pydantic error before it is located (for example to drop a union member's tag
from ``loc``), or returns None to leave it out."""


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue  # ``<<: *base``: SafeLoader merges it, and a key given here wins
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:
                continue  # an unhashable key: SafeLoader refuses it with its line
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class YamlDocument:
    source: str
    data: Any
    root: yaml.Node | None

    def line(self, loc: Sequence[Any]) -> int:
        return line_of(self.root, loc)

    def locate(self, loc: Sequence[Any], message: str) -> str:
        """``file:line: items[i] (name): field: message`` for the deepest node on ``loc``."""
        loc = list(loc)
        where = f"{self.source}:{self.line(loc)}"
        subject = ""
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            items = self.data.get(loc[0]) if isinstance(self.data, dict) else None
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            name = item.get("name") if isinstance(item, dict) else None
            subject = f"{loc[0]}[{loc[1]}]" + (f" ({name})" if isinstance(name, str) else "")
            loc = loc[2:]
        field = ".".join(str(part) for part in loc)
        parts = [part for part in (subject, field) if part] or ["(file)"]
        return f"{where}: {': '.join(parts)}: {message.removeprefix('Value error, ')}"

    def fail(self, problems: Sequence[Problem]) -> ConfigError:
        shown = [self.locate(p.loc, p.message) for p in problems[:MAX_PROBLEMS]]
        more = len(problems) - len(shown)
        return ConfigError("; ".join(shown) + (f" (and {more} more)" if more > 0 else ""))

    def validate(
        self,
        model: type[M],
        *,
        checks: Iterable[Check[M]] = (),
        error_filter: ErrorFilter | None = None,
        expected: str = "a mapping",
    ) -> M:
        """The document as ``model``; ``ConfigError`` naming every problem's line and field."""
        data = {} if self.data is None else self.data
        if not isinstance(data, dict):
            raise ConfigError(f"{self.source}:1: expected {expected}, got {type(data).__name__}")
        try:
            value = model.model_validate(data)
        except ValidationError as exc:
            errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
            if error_filter is not None:
                errors = [e for e in map(error_filter, errors) if e is not None] or errors
            raise self.fail([Problem(tuple(e["loc"]), str(e["msg"])) for e in errors]) from None
        problems = [problem for check in checks for problem in check(value)]
        if problems:
            raise self.fail(problems)
        return value


def read_yaml(path: Path, *, what: str = "file") -> YamlDocument:
    """Parse ``path`` (safely, duplicate keys refused); ``ConfigError`` when it cannot."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the {what}: {reason}") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse YAML ``text``; ``source`` names it in errors."""
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return YamlDocument(source, data, root)


def load_yaml(
    path: Path,
    model: type[M],
    *,
    what: str = "file",
    checks: Iterable[Check[M]] = (),
    error_filter: ErrorFilter | None = None,
    expected: str = "a mapping",
) -> M:
    """Read, parse and validate ``path`` as ``model`` (see the module's docstring)."""
    return read_yaml(path, what=what).validate(
        model, checks=checks, error_filter=error_filter, expected=expected
    )


def line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int:
    """1-based line of the deepest YAML node on an error's path (pydantic's ``loc``)."""
    line = 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


T = TypeVar("T")


class ReloadingFile(Generic[T]):
    """A file loaded by ``load`` and read again when it changes (modification time or size), so
    that a worker picks up an edit without a restart. The first load must succeed; a later broken
    edit keeps the last good value, says why once per edit (``last_error``, an error log line,
    ``on_failure``) and is read again at the next change. A file that disappears keeps the last
    value unless ``missing_is_empty`` (then ``load`` is asked, and says what no file means)."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        what: str,
        missing_is_empty: bool = False,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._path = path
        self._load = load
        self._what = what
        self._missing_is_empty = missing_is_empty
        self._on_failure = on_failure
        self._value = load(path)
        self._stamp = self._stat()
        self.last_error: str | None = None

    @property
    def path(self) -> Path:
        return self._path

    def _stat(self) -> tuple[float, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def current(self) -> T:
        stamp = self._stat()
        if stamp == self._stamp or (stamp is None and not self._missing_is_empty):
            return self._value
        self._stamp = stamp
        try:
            self._value = self._load(self._path)
        except ConfigError as exc:
            self.last_error = str(exc)
            _log.error(f"{self._what} reload failed; keeping the last good ones", error=str(exc))
            if self._on_failure is not None:
                self._on_failure()
        else:
            self.last_error = None
            _log.info(f"{self._what} reloaded", path=str(self._path))
        return self._value
