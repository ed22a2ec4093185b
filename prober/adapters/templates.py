"""`{name}` templates for request lines, headers and bodies, and dotted JSON paths."""

from __future__ import annotations

import functools
import re
import secrets as _random
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..config.secrets import Secret

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class TemplateError(ValueError):
    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing  # a value that an earlier step (e.g. login) would provide


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Built-in values, made only when a template asks for them (most templates use one or two).
_BUILTINS: dict[str, Any] = {
    "uuid": lambda: str(uuid.uuid4()),
    "random": lambda: _random.randbits(32),
    "now": _iso_now,
    "now_ms": lambda: int(time.time() * 1000),
    "now_s": lambda: int(time.time()),
}


class Values(dict[str, Any]):
    """Template values: configured and carried ones, plus built-ins made on first use and
    then fixed for the rest of the attempt (a step's {uuid} is the same in URL and body)."""

    def __missing__(self, key: str) -> Any:
        make = _BUILTINS.get(key)
        if make is None:
            raise KeyError(key)
        value = self[key] = make()
        return value

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in _BUILTINS


def builtins(context: Mapping[str, Any]) -> Values:
    """Values every template may use; fresh for each attempt."""
    return Values(context)


def _value(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise TemplateError(f"no value for {{{name}}}", missing=True)
    value = values[name]
    return value.reveal() if isinstance(value, Secret) else value


def placeholders(text: str) -> list[str]:
    """The names a template refers to."""
    return [name for name in _PLACEHOLDER.findall(text) if name]


def render_text(text: str, values: Mapping[str, Any]) -> str:
    if "{" not in text and "}" not in text:  # most keys and many values: no regex pass
        return text

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return str(_value(match.group(1), values))

    return _PLACEHOLDER.sub(replace, text)


def render(node: Any, values: Mapping[str, Any]) -> Any:
    """Render every string in a JSON-like tree. A string that is one whole placeholder keeps
    the value's type (so `"{random}"` becomes a number)."""
    if isinstance(node, Secret):
        return node.reveal()
    if isinstance(node, str):
        if "{" not in node and "}" not in node:
            return node
        whole = _PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1):
            return _value(whole.group(1), values)
        return render_text(node, values)
    if isinstance(node, dict):
        return {render_text(str(k), values): render(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [render(v, values) for v in node]
    return node


_MISSING = object()


_PATH = re.compile(r"(?:\$\.)?(?:[^.\[\]]+|\[\d+\])(?:\.[^.\[\]]+|\[\d+\])*")


@functools.lru_cache(maxsize=4096)  # the configured paths, parsed at every attempt
def parse_path(path: str) -> tuple[str | int, ...]:
    """`data.items[0].id` (an optional leading `$.` is allowed) as its parts."""
    if not _PATH.fullmatch(path):
        raise ValueError(f"bad JSON path {path!r} (expected e.g. data.items[0].id)")
    text = path[2:] if path.startswith("$.") else path
    return tuple(
        int(m.group(2)) if m.group(2) is not None else m.group(1) for m in _PATH_PART.finditer(text)
    )


def lookup(document: Any, path: tuple[str | int, ...]) -> Any:
    """The value at a parsed path, or `MISSING`."""
    node = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return _MISSING
            node = node[part]
        else:
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
    return node


MISSING = _MISSING
