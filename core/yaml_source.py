"""YAML that operators write (rules, services, detectors): refuse a key given twice, and find the
line of the node an error is about, so that every loader can say ``file:LINE: field: problem``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """A key given twice would silently drop half of what it holds: refuse it instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
