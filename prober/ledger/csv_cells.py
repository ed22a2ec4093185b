"""CSV cells a spreadsheet will not run: every CSV the prober writes goes through `cell`.

A cell starting with `=`, `+`, `-`, `@`, tab or carriage return is taken as a formula by
spreadsheet programs (an attempt's detail `=cmd|' /C calc'!A0` would run a command). As
OWASP recommends, such a cell gets a leading single quote, which spreadsheets show as text.
A cell that already starts with a quote gets one more, so `plain` undoes `cell` exactly and
the minute CSV survives an export/import round trip (target names may start with `-`).
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet evaluates (None is an empty cell)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) or text.startswith(QUOTE):
        return QUOTE + text
    return text


def cells(values: Iterable[object]) -> list[str]:
    return [cell(value) for value in values]


def plain(text: str) -> str:
    """The value `cell` wrote (a cell written by hand without the quote is left as it is)."""
    return text[1:] if text.startswith(QUOTE) else text
