"""Errors a user can act on. The CLI prints them as one clear message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config, a flag, a ledger file, an import file. The message says what and
    where; it never contains a secret."""


class LedgerError(UserError):
    """The ledger file cannot be used as it is (not a ledger, newer schema, unreadable)."""
