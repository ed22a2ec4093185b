"""A real PostgreSQL (Debian's `postgresql` package) on 127.0.0.1 for the ledger tests.

`initdb` in a temp folder, `pg_ctl start` on a free port with the unix socket inside that
folder, stopped by pid. PostgreSQL refuses to run as root (CI runs as root), so the cluster
belongs to, and runs as, the unprivileged `postgres` user Debian's package creates. Clients
log in over TCP as a role with a password (scram-sha-256), the way a prober does with the
password from a secret; the fixture itself administers over the socket (trust, local only).

One cluster per test session (per xdist worker): starting one takes a few seconds, a fresh
database in it (`CREATE DATABASE`) a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .chat_app import free_port

ROLE = "im_prober"
PASSWORD = "pg-test-password-4711"
ADMIN = "postgres"  # the cluster's superuser (socket only)
# Fast and still a real server: a test cluster need not survive power loss. The bench
# starts its cluster with durable=True (the defaults) to compare like with like.
_TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def bin_dir() -> Path:
    """The server's binaries: not on PATH on Debian. `pg_config --bindir` (which libpq-dev
    also answers, without a server), else the newest /usr/lib/postgresql/N/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            if done.returncode == 0 and done.stdout.strip():
                candidates.append(Path(done.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        candidates += sorted(root.glob("*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail("Debian's postgresql is not installed: `make system-deps` installs it")


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: `postgres` when we are root (initdb refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, but there is no `postgres` user to run PostgreSQL as")


@dataclass
class PostgresCluster:
    """A throwaway cluster. `url(db)` is what a prober's config says (no password in it)."""

    durable: bool = False
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="im-prober-pg-", dir="/tmp"))
    )
    port: int = 0
    role: str = ROLE
    password: str = PASSWORD
    pid: int | None = None
    _options: str = ""
    _names: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.bin = bin_dir()
        self.user = _server_user()
        self.data = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self.log = self.workdir / "server.log"

    # -- running the server's tools as its user -------------------------------------------

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[arg-type]
        )

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> PostgresCluster:
        self._chown(self.workdir)
        self.socket_dir.mkdir(mode=0o700)
        self._chown(self.socket_dir)
        init = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-instructions",
            *(() if self.durable else ("--no-sync",)),
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}{init.stderr}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "60",
            "shared_buffers": "32MB",
            **({} if self.durable else _TEST_SETTINGS),
        }
        for attempt in range(3):  # a free port may be taken by someone else meanwhile
            self.port = free_port()
            self._options = " ".join(
                f"-c {k}={v}" for k, v in {**settings, "port": str(self.port)}.items()
            )
            started = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                "-o", self._options,
            )  # fmt: skip
            if started.returncode == 0:
                break
            if attempt == 2 or "could not bind" not in self.diagnostics():
                raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}{self.diagnostics()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self.admin(f"CREATE ROLE {self.role} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def diagnostics(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def halt(self) -> None:
        """`pg_ctl stop -m fast`, then SIGKILL the postmaster by pid if it lingers; the
        cluster's files stay, for `resume`."""
        if self.pid is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", "20", "-D", str(self.data))
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None

    def resume(self) -> None:
        """Start the halted cluster again, on the same port."""
        started = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
            "-o", self._options,
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}{self.diagnostics()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Halt the server and remove its files."""
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- using it ------------------------------------------------------------------------

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        """One statement as the superuser, over the socket (CREATE DATABASE cannot run in a
        transaction, so autocommit)."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=ADMIN, dbname=dbname, autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str = "ledger") -> str:
        """A fresh, empty database owned by the role; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} OWNER {self.role}")
        return name

    def url(self, dbname: str) -> str:
        """The database's URL as a config writes it: the password comes separately."""
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{dbname}"

    def terminate_connections(self, dbname: str) -> None:
        """End every client connection to the database (a server-side disconnect)."""
        self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session (each xdist worker has its own)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database's URL; its password is in IM_PROBER_TEST_PG_PASSWORD (the env
    secret a config refers to as `password: {env: IM_PROBER_TEST_PG_PASSWORD}`)."""
    monkeypatch.setenv("IM_PROBER_TEST_PG_PASSWORD", postgres.password)
    return postgres.url(postgres.create_database())
