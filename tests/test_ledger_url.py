"""`ledger.url`: a PostgreSQL ledger's URL, checked at load, never carrying a password."""

from __future__ import annotations

import pytest

from prober.config.dburl import display_url, url_hosts
from prober.config.models import ConfigError, load_config

from .conftest import external_config

URL = "postgresql://im_prober@db.example:5432/im_prober"


def config_with(write_config, ledger: str):
    text = external_config().replace("ledger: {path: ledger.sqlite3}", ledger)
    return write_config(text)


def errors_of(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_a_url_with_a_password_reference_is_a_postgresql_ledger(write_config, monkeypatch) -> None:
    monkeypatch.setenv("IM_PROBER_DB_PASSWORD", "db-password-0815")
    path = config_with(
        write_config, f"ledger: {{url: '{URL}', password: {{env: IM_PROBER_DB_PASSWORD}}}}"
    )
    ledger = load_config(path).config.ledger
    assert ledger.url == URL
    assert ledger.password is not None and ledger.password.reveal() == "db-password-0815"
    assert ledger.display_url == URL
    assert "db-password-0815" not in str(load_config(path).redacted())


def test_a_password_inside_the_url_is_refused_without_repeating_it(write_config) -> None:
    for url in (
        "postgresql://im_prober:hunter2-secret@db.example/im_prober",
        "postgresql://im_prober@db.example/im_prober?sslmode=require&password=hunter2-secret",
        "postgres://im_prober@db.example/im_prober?PassWord=hunter2-secret",
    ):
        message = errors_of(config_with(write_config, f"ledger: {{url: '{url}'}}"))
        assert "ledger.url" in message and ":1:" in message
        assert "ledger.password: {env: NAME}" in message
        assert "hunter2-secret" not in message


def test_exactly_one_of_path_and_url(write_config) -> None:
    message = errors_of(
        config_with(write_config, f"ledger:\n  path: ledger.sqlite3\n  url: '{URL}'\n")
    )
    assert (
        "config.yaml:3: ledger.url: set either path (SQLite) or url (PostgreSQL), not both (first on line 2)"
        in message
    )


def test_a_password_without_a_url_is_refused(write_config, monkeypatch) -> None:
    monkeypatch.setenv("IM_PROBER_DB_PASSWORD", "db-password-0815")
    message = errors_of(
        config_with(
            write_config, "ledger: {path: l.sqlite3, password: {env: IM_PROBER_DB_PASSWORD}}"
        )
    )
    assert "ledger.password: a password is for a PostgreSQL ledger: set url too" in message


def test_urls_that_are_not_a_postgresql_database_are_refused(write_config) -> None:
    cases = {
        "mysql://im@db.example/x": "must be a postgresql://USER@HOST:PORT/DATABASE URL",
        "postgresql://im@db.example": "names no database",
        "postgresql://im@db.example/x#frag": "has no #fragment",
        "postgresql://im@[::1/x": "not a URL",
        "postgresql://im@db.example/" + "x" * 3000: "longer than 2048 characters",
    }
    for url, expected in cases.items():
        assert expected in errors_of(config_with(write_config, f"ledger: {{url: '{url}'}}")), url


def test_a_url_is_displayed_without_any_password() -> None:
    assert display_url("postgresql://u:pw-secret@h:5432/db?password=pw-secret&sslmode=require") == (
        "postgresql://u:<redacted>@h:5432/db?password=<redacted>&sslmode=require"
    )
    assert display_url(URL) == URL
    assert url_hosts("postgresql://u:pw-secret@h1:5432,h2:5433/db") == "h1:5432,h2:5433"
    assert url_hosts("postgresql:///db?host=/run/postgresql") == "/run/postgresql"
