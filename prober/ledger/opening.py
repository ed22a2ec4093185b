"""Opening the configured ledger: the SQLite file of `ledger.path`, or the PostgreSQL
database of `ledger.url` with the password of `ledger.password`.

Read commands load the config without reading secrets (the probe credentials need not be
present where reports run); a PostgreSQL ledger's own password is still needed there, so
it is read here, from its reference, when the config did not read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config.secrets import Secret, resolve_references
from ..errors import UserError

if TYPE_CHECKING:
    from ..config.models import ConfigFile
    from .store import Ledger


def ledger_location(config_file: ConfigFile) -> str | Path:
    """What `Ledger` opens: the file's path, or the database's URL (no password in it)."""
    url = config_file.config.ledger.url
    return url if url is not None else config_file.ledger_path


def display_location(config_file: ConfigFile) -> str:
    """The ledger as messages name it (a URL redacted)."""
    ledger = config_file.config.ledger
    return ledger.display_url if ledger.url is not None else str(config_file.ledger_path)


def ledger_password(config_file: ConfigFile) -> str | None:
    """The PostgreSQL password, read from its reference now if the config load did not."""
    secret = config_file.config.ledger.password
    if secret is None:
        return None
    if secret._value is None:
        kind, _, name = secret.source.partition(":")
        tree, problems = resolve_references({"password": {kind: name}}, config_file.path.parent)
        if problems:
            raise UserError(f"{config_file.path}: ledger.password: {problems[0][1]}")
        secret = tree["password"]
        assert isinstance(secret, Secret)
    return secret.reveal()


def open_ledger(config_file: ConfigFile, *, readonly: bool = False, create: bool = True) -> Ledger:
    """The configured ledger, opened as `Ledger(...)` would open its location."""
    from .store import Ledger

    location = ledger_location(config_file)
    if isinstance(location, Path):
        return Ledger(location, readonly=readonly, create=create)
    return Ledger(location, readonly=readonly, create=create, password=ledger_password(config_file))
