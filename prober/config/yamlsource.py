"""YAML loading that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
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


# Bounds on what one config may cost to load: a hostile or broken file gets a clear error in
# well under a second instead of exhausting the stack or the memory. Real configs stay far
# below them (a thousand targets are ~0.2 MiB and ~25,000 values).
# A config of 10,000 targets is a few MiB; the bound keeps `-c /dev/zero` and a typo'd log
# file from being read whole.
MAX_BYTES = 16 << 20
MAX_DEPTH = 64  # collections inside collections
# Values reached through aliases (`*a` counts every value it stands for): a file's own
# values are bounded by its size, but a few lines of aliases can stand for billions.
MAX_ALIASED = 100_000

try:
    # libyaml scans and parses about six times faster than the pure-Python parser; the
    # composer below stays in Python either way, so every bound is checked while composing.
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _StrictLoader(
    yaml.composer.Composer, _Parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
):
    """A safe loader that rejects duplicate keys (PyYAML keeps the last one silently), reads
    booleans as YAML 1.2 does (only true/false, so `backup_policy: off` or a country code
    `NO` stay strings instead of turning into False), and bounds nesting depth and alias
    expansion while it composes (PyYAML's composer recurses once per level, and an alias
    bomb of a few lines stands for billions of values)."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._values = 0  # values composed so far, aliases expanded (sizes the anchors)
        self._aliased = 0
        self._open_anchors: set[str] = set()
        self._anchor_values: dict[str, int] = {}

    def _count(self, values: int, mark: Any, aliased: bool) -> None:
        self._values += values
        if aliased:
            self._aliased += values
            if self._aliased > MAX_ALIASED:
                raise YamlError(
                    f"aliases make the document larger by more than {MAX_ALIASED:,} values",
                    mark.line + 1,
                )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise YamlError(
                    f"alias *{event.anchor} refers to a value that contains it",
                    event.start_mark.line + 1,
                )
            self._count(self._anchor_values.get(event.anchor, 1), event.start_mark, True)
            return super().compose_node(parent, index)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection and self._depth >= MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark.line + 1)
        self._count(1, event.start_mark, False)
        anchor = event.anchor
        before = self._values - 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._depth += collection
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= collection
            self._open_anchors.discard(anchor)  # type: ignore[arg-type]
        if anchor is not None:
            self._anchor_values[anchor] = self._values - before
        return node

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            # An impossible date (2026-02-30) stays text: the field that expects a date then
            # says so with its own name and line.
            return self.construct_scalar(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than int() converts
            raise YamlError("this integer has too many digits", node.start_mark.line + 1) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
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


def read_yaml_file(path: Path) -> str:
    """A YAML file's text, read to at most MAX_BYTES: `-c /dev/zero` or a FIFO nobody writes
    ends in an error or an empty document, never an endless read. Raises OSError,
    UnicodeDecodeError or YamlError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        # Opened non-blocking so a FIFO without a writer does not block the open; read
        # blocking, so a pipe with a writer (`-c <(...)`) is read to its end.
        os.set_blocking(fd, True)
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlError(f"the file is larger than {MAX_BYTES >> 20} MiB", None)
    return data.decode("utf-8")


def load_yaml(text: str) -> YamlDocument:
    if len(text) > MAX_BYTES:
        raise YamlError(f"the file is larger than {MAX_BYTES >> 20} MiB", None)
    try:
        yaml.reader.Reader(text)  # checks every character, as the pure-Python reader does
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YamlError(
            f"invalid YAML: character #x{exc.character:04x} is not allowed", line
        ) from None
    loader = _StrictLoader(text)
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
