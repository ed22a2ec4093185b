"""YAML loading that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)  # 1-based line of each value's node

    def line_of(self, location: tuple[Any, ...]) -> int | None:
        """The line of the deepest node a (pydantic-style) location reaches.

        Locations may carry elements that are not in the document (union tags, a missing
        field's name); those are skipped, so the answer is the nearest enclosing node.
        """
        path: Path_ = ()
        for element in location:
            candidate = (*path, element)
            if candidate in self.lines:
                path = candidate
        return self.lines.get(path)


class YamlError(ValueError):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently) and reads
    booleans as YAML 1.2 does: only true/false, so `backup_policy: off` or a country code
    `NO` stay strings instead of turning into False."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise YamlError("mapping keys must be plain strings", key_node.start_mark.line + 1)
            if key == "<<":
                raise YamlError("merge keys (<<) are not supported", key_node.start_mark.line + 1)
            if key in seen:
                raise YamlError(
                    f"duplicate key {key!r} (first on line {seen[key]})",
                    key_node.start_mark.line + 1,
                )
            seen[key] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines)
            # An unknown key is reported at the key's own line.
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)


def load_yaml(text: str) -> YamlDocument:
    try:
        loader = _StrictLoader(text)  # checks the characters first
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YamlError(
            f"invalid YAML: character #x{exc.character:04x} is not allowed", line
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None)
        lines: dict[Path_, int] = {}
        _walk(node, (), lines)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlError(f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}", None) from None
    finally:
        loader.dispose()
    return YamlDocument(data=data, lines=lines)
