"""The PostgreSQL ledger's own behaviour, against a real cluster (tests/postgres_fixture.py):
opening errors that name the host and never the password, the schema's version story, a
connection lost while running (the prober's trouble: retried, with backoff), concurrent
first starts. The ledger's semantics on both backends are in test_ledger*.py."""

from __future__ import annotations

import threading

import pytest

from prober.errors import LedgerError, UserError
from prober.ledger.postgres import (
    FILLFACTOR,
    MIGRATIONS,
    UPDATED_IN_PLACE,
    LedgerUnavailable,
    PostgresConnection,
    open_database,
)

from .chat_app import free_port
from .postgres_fixture import PostgresCluster

SCHEMA = len(MIGRATIONS)


def connect(url: str, password: str, *, readonly: bool = False) -> PostgresConnection:
    return PostgresConnection(url, password, readonly=readonly)


def test_a_refused_server_at_start_is_one_error_naming_the_host_not_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://im_prober@127.0.0.1:{port}/ledger"
    with pytest.raises(LedgerUnavailable) as info:
        connect(url, "never-printed-password")
    message = str(info.value)
    assert message.startswith(f"{url}: cannot connect to the ledger database at 127.0.0.1:{port}: ")
    assert "refused" in message
    assert "never-printed-password" not in message and "\n" not in message


def test_a_wrong_password_is_refused_without_printing_either_password(
    postgres, postgres_url
) -> None:
    with pytest.raises(LedgerUnavailable) as info:
        connect(postgres_url, "a-wrong-password-1234")
    message = str(info.value)
    assert "password authentication failed" in message
    assert "a-wrong-password-1234" not in message and postgres.password not in message


def test_the_schema_is_created_once_when_probers_start_together(postgres, postgres_url) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            db = connect(postgres_url, postgres.password)
            db.migrate(SCHEMA, "im-prober test")
            db.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    db = connect(postgres_url, postgres.password)
    assert db.schema_version() == (SCHEMA, True)
    assert dict(db.execute("SELECT key, value FROM meta").fetchall())["application"] == "im-prober"


def fillfactors(db: PostgresConnection) -> dict[str, list[str] | None]:
    return dict(
        db.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(?)",
            (list(UPDATED_IN_PLACE),),
        ).fetchall()
    )


def test_tables_updated_in_place_get_room_on_their_pages_and_a_foreign_owner_is_no_error(
    postgres, postgres_url
) -> None:
    db = open_database(postgres_url, postgres.password)
    assert fillfactors(db) == {name: [f"fillfactor={FILLFACTOR}"] for name in UPDATED_IN_PLACE}
    db.close()
    # Tables another role owns (a DBA's schema): the writer cannot ALTER them and opens anyway.
    dbname = postgres_url.rsplit("/", 1)[1]
    postgres.admin(
        f"ALTER TABLE chain_heads OWNER TO postgres; ALTER TABLE chain_heads RESET (fillfactor); "
        f"GRANT ALL ON chain_heads TO {postgres.role}",
        dbname,
    )
    db = open_database(postgres_url, postgres.password)
    assert fillfactors(db)["chain_heads"] is None
    assert fillfactors(db)["verdict_totals"] == [f"fillfactor={FILLFACTOR}"]
    db.execute("INSERT INTO chain_heads VALUES ('minutes', 1, '', 1, '\\x00')")
    assert db.execute("SELECT count(*) FROM chain_heads").fetchone()[0] == 1
    db.close()
    # A reader never alters anything.
    postgres.admin("ALTER TABLE verdict_totals RESET (fillfactor)", dbname)
    reader = open_database(postgres_url, postgres.password, readonly=True)
    assert fillfactors(reader)["verdict_totals"] is None
    reader.close()


def test_a_database_of_another_application_is_refused(postgres, postgres_url) -> None:
    db = connect(postgres_url, postgres.password)
    db.execute("CREATE TABLE invoices (id integer)")
    with pytest.raises(
        LedgerError, match=r"not an im-prober ledger \(the database holds other tables: invoices\)"
    ):
        db.schema_version()
    db.execute("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('application', 'billing')")
    with pytest.raises(LedgerError, match="another application's"):
        db.schema_version()


def test_a_read_only_connection_refuses_writes(postgres, postgres_url) -> None:
    connect(postgres_url, postgres.password).migrate(SCHEMA, "im-prober test")
    reader = connect(postgres_url, postgres.password, readonly=True)
    with pytest.raises(LedgerError, match="opened read-only; nothing can be written"):
        reader.execute("INSERT INTO series (target, probe) VALUES (?, ?)", ("t", ""))
    assert reader.execute("SELECT count(*) FROM series").fetchone()[0] == 0


def test_a_connection_lost_while_idle_is_reconnected_on_next_use(postgres, postgres_url) -> None:
    db = connect(postgres_url, postgres.password)
    db.migrate(SCHEMA, "im-prober test")
    postgres.terminate_connections(postgres_url.rsplit("/", 1)[1])
    with pytest.raises(LedgerUnavailable, match=r"the ledger database at 127\.0\.0\.1:"):
        db.execute("SELECT count(*) FROM series")
    assert db.execute("SELECT count(*) FROM series").fetchone()[0] == 0


def test_a_connection_lost_in_a_transaction_loses_only_that_transaction(
    postgres, postgres_url
) -> None:
    db = connect(postgres_url, postgres.password)
    db.migrate(SCHEMA, "im-prober test")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO series (target, probe) VALUES (?, ?)", ("lost", ""))
    postgres.terminate_connections(postgres_url.rsplit("/", 1)[1])
    # Nothing reconnects mid-transaction: a later statement would run without the earlier.
    with pytest.raises(LedgerUnavailable):
        db.execute("INSERT INTO series (target, probe) VALUES (?, ?)", ("after", ""))
    with pytest.raises(LedgerUnavailable):
        db.execute("INSERT INTO series (target, probe) VALUES (?, ?)", ("after", ""))
    with pytest.raises(LedgerUnavailable, match="before the commit"):
        db.execute("COMMIT")
    db.execute("ROLLBACK")  # harmless once the transaction is gone
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO series (target, probe) VALUES (?, ?)", ("kept", ""))
    db.execute("COMMIT")
    assert db.execute("SELECT target FROM series").fetchall() == [("kept",)]


def test_reconnecting_to_a_server_that_is_down_backs_off() -> None:
    cluster = PostgresCluster().start()
    try:
        url = cluster.url(cluster.create_database())
        db = connect(url, cluster.password)
        cluster.stop()
        with pytest.raises(LedgerUnavailable):
            db.execute("SELECT 1")
        with pytest.raises(LedgerUnavailable, match="cannot connect"):
            db.execute("SELECT 1")  # the first reconnection, refused
        with pytest.raises(LedgerUnavailable, match=r"is unreachable \(.*\); next try in"):
            db.execute("SELECT 1")  # within the backoff: no new connection attempt
    finally:
        cluster.stop()


def test_a_server_gone_while_running_is_buffered_like_a_full_disk_and_written_when_back() -> None:
    """The real writer on a PostgreSQL ledger whose server stops and starts again: the
    minutes wait in memory (the prober's trouble, not the provider's), then land once each."""
    import asyncio

    from prober.ledger.store import Ledger
    from prober.ledger.view import LedgerView
    from prober.runtime.targets import TargetSet
    from prober.runtime.writer import MinuteWriter
    from prober.sla import Outcome, Reason, State
    from prober.stats import RuntimeStats

    from .runtime_util import FakeClock
    from .test_writer import M, closed, target

    cluster = PostgresCluster().start()
    try:
        ledger = Ledger(cluster.url(cluster.create_database()), password=cluster.password)
        t = target(cluster.workdir)
        view = LedgerView()
        view.track("t", t.sla.calendar())
        writer = MinuteWriter(
            ledger,
            view,
            RuntimeStats(),
            FakeClock(M * 60),
            buffer_minutes=60,
            verdict_of_missed=TargetSet.build([t]).verdict_of_missed,
        )

        async def main() -> None:
            await writer.write(closed(t, M))
            cluster.halt()
            await writer.write(closed(t, M + 1, Outcome.FAILURE))
            await writer.write(closed(t, M + 2))
            assert not writer.ok and writer.unwritten == 2
            assert writer.stats.ledger_write_errors == 2
            cluster.resume()
            for _ in range(100):  # the reconnection backs off: at most a few seconds here
                await writer.flush()
                if writer.ok:
                    break
                await asyncio.sleep(0.1)
            assert writer.ok and writer.unwritten == 0

        asyncio.run(main())
        rows = {r.minute: (r.state, r.reason) for r in ledger.minute_rows("t") if r.probe == ""}
        assert rows == {
            M: (State.AVAILABLE, Reason.NONE),
            M + 1: (State.APPARENT_FAILURE, Reason.NONE),
            M + 2: (State.MAINTENANCE, Reason.NONE),  # the target's window
        }
        assert ledger.verdict_totals()[("t", "")] == {
            State.AVAILABLE: 1,
            State.APPARENT_FAILURE: 1,
            State.MAINTENANCE: 1,
        }
        ledger.close()
    finally:
        cluster.stop()


def test_a_config_with_a_url_opens_the_postgresql_ledger_with_the_password_of_its_secret(
    postgres, postgres_url, write_config, monkeypatch
) -> None:
    from prober.config.models import load_config
    from prober.ledger.opening import display_location, open_ledger

    from .conftest import external_config

    path = write_config(
        external_config().replace(
            "ledger: {path: ledger.sqlite3}",
            f"ledger: {{url: '{postgres_url}', password: {{env: IM_PROBER_TEST_PG_PASSWORD}}}}",
        )
    )
    with open_ledger(load_config(path)) as ledger:
        assert ledger.path is None and ledger.where == postgres_url
        assert ledger.last_closed_minute("box") is None
    # a read command loads the config without secrets: the ledger's own is read when needed
    config = load_config(path, resolve_secrets=False)
    assert display_location(config) == postgres_url
    with open_ledger(config, readonly=True) as reader:
        assert reader.verdict_totals() == {}
    monkeypatch.delenv("IM_PROBER_TEST_PG_PASSWORD")
    with pytest.raises(
        UserError,
        match=r"ledger\.password: environment variable IM_PROBER_TEST_PG_PASSWORD is not set",
    ):
        open_ledger(config, readonly=True)


def test_one_daemon_per_vantage_on_a_shared_ledger(postgres, postgres_url) -> None:
    from prober.ledger.lock import VantageLock

    first = VantageLock.acquire(postgres_url, postgres.password, "frankfurt")
    assert first.held()
    with pytest.raises(
        UserError,
        match=r"another im-prober daemon \(from 127\.0\.0\.1\) is this ledger's vantage 'frankfurt'",
    ):
        VantageLock.acquire(postgres_url, postgres.password, "frankfurt", wait=0.3)
    other = VantageLock.acquire(postgres_url, postgres.password, "singapore", wait=0)
    first.release()  # (or its process ends): the name is free again
    again = VantageLock.acquire(postgres_url, postgres.password, "frankfurt", wait=1)
    postgres.terminate_connections(postgres_url.rsplit("/", 1)[1])
    assert not again.held()  # the connection, and so the lock, is gone
    other.release()
    again.release()


def test_commands_and_the_daemon_on_an_unreachable_database_say_so_once(
    write_config, capsys, monkeypatch
) -> None:
    """The CLI and the daemon at start: one line naming the URL and the host, exit 2, no
    traceback, never the password."""
    from .cli_util import run
    from .conftest import BASE_TARGET
    from .daemon_util import run_in_foreground

    port = free_port()
    url = f"postgresql://im_prober@127.0.0.1:{port}/im_prober"
    monkeypatch.setenv("IM_PROBER_DB_PASSWORD", "never-shown-password")
    config = write_config(
        f"ledger: {{url: '{url}', password: {{env: IM_PROBER_DB_PASSWORD}}}}\n"
        "targets:\n" + BASE_TARGET
    )
    expected = f"{url}: cannot connect to the ledger database at 127.0.0.1:{port}: "
    for argv in (
        ("report", "-c", str(config), "--target", "demo", "--month", "2026-04"),
        ("ledger", "export", "-c", str(config)),
        ("ledger", "migrate", "-c", str(config)),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert expected in err and "never-shown-password" not in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    done = run_in_foreground(config, f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "never-shown-password" not in done.stderr
    assert "Traceback" not in done.stderr


def _fleet_minutes(ledger, minutes: range, targets: int) -> None:
    """A vantage's and the fleet's minutes of `targets` targets with a probe each, and the
    attempts they were decided over: every chain, heads and totals a close moves."""
    from prober.ledger.fleet import write_vantage_minutes
    from prober.ledger.store import PendingEvidence
    from prober.records import Attempt, ClosedMinute
    from prober.sla import Outcome, OutcomeCounts
    from prober.sla.verdicts import APPARENT_FAILURE, AVAILABLE

    for minute in minutes:
        closed, pending = [], PendingEvidence("east")
        for i in range(targets):
            verdict = AVAILABLE if (i + minute) % 3 else APPARENT_FAILURE
            outcome = Outcome.SUCCESS if verdict is AVAILABLE else Outcome.FAILURE
            counts = OutcomeCounts(**{outcome.value: 1})
            pending.attempts.append(
                Attempt(f"t{i}", "send", minute * 60.0 + i % 60, 0.01, outcome, vantage="east")
            )
            closed.append(
                ClosedMinute(f"t{i}", minute, verdict, counts, {"send": (verdict, counts)})
            )
        pending.seen_at = minute * 60.0 + 61
        write_vantage_minutes(ledger, closed, pending)
        ledger.write_minutes(
            [ClosedMinute(c.target, c.minute, c.verdict, c.counts, dict(c.probes)) for c in closed]
        )


def test_large_writes_staged_by_copy_leave_the_same_rows_as_arrays_and_verify(
    postgres, monkeypatch
) -> None:
    """Heads and totals of a large write go by COPY into a temporary table (STAGE_ROWS);
    the ledger's rows are exactly what the arrays leave, and a database that allows no
    temporary tables gets the arrays."""
    from prober.ledger import postgres as pg
    from prober.ledger.chain import verify
    from prober.ledger.store import Ledger

    from .ledger_backends import TABLES

    def run(stage_rows: int, *, temporary: bool = True) -> tuple[dict, int]:
        name = postgres.create_database()
        if not temporary:
            postgres.admin(f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC, {postgres.role}")
        monkeypatch.setattr(pg, "STAGE_ROWS", stage_rows)
        staged = 0
        real = pg.PostgresConnection._rows_source

        def counted(self, conn, names, types, rows):
            nonlocal staged
            source, params = real(self, conn, names, types, rows)
            staged += params is None
            return source, params

        monkeypatch.setattr(pg.PostgresConnection, "_rows_source", counted)
        with Ledger(postgres.url(name), password=postgres.password) as ledger:
            _fleet_minutes(ledger, range(1000, 1003), 7)
            # the same minutes again (a restart): nothing new, no chain moved
            _fleet_minutes(ledger, range(1002, 1003), 7)
            assert verify(ledger).ok, verify(ledger)
            tables = {
                t: sorted(ledger._db.execute(f"SELECT * FROM {t}").fetchall())
                for t in TABLES
                if t != "meta"  # (its created_at)
            }
        monkeypatch.setattr(pg.PostgresConnection, "_rows_source", real)
        return tables, staged

    arrays, none_staged = run(10**9)
    copied, some_staged = run(1)
    denied, denied_staged = run(1, temporary=False)
    assert none_staged == 0 and denied_staged == 0
    assert some_staged > 10  # heads read, heads moved, three totals: every write
    assert copied == arrays
    assert denied == arrays
    assert sum(n for *_k, n in arrays["verdict_totals"]) == 2 * 3 * 7
