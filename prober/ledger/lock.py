"""One daemon per ledger: an OS lock (flock) on `<ledger>.lock`, holding the holder's pid;
on a PostgreSQL ledger, one daemon per vantage (`VantageLock`, an advisory lock).

Two daemons writing one ledger would both probe and race to close the same minutes. The
kernel drops an flock when its holder exits, however it exits (SIGKILL included), so a lock
is never stale; the file itself stays (removing it would let a third process lock a new file
while the second still holds the old one). Commands that only read, and `ledger import`,
do not take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from ..errors import UserError


def lock_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


class LedgerLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, ledger_path: Path, wait: float = 3.0) -> LedgerLock:
        """Take the lock, waiting up to `wait` seconds for a holder that is exiting."""
        path = lock_path(ledger_path)
        writable = True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            # A folder (or lock file) this user may not write: an existing lock file can
            # still be locked through a read-only descriptor.
            try:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                raise UserError(
                    f"{path}: cannot create the ledger's lock file: {exc.strerror or exc}"
                ) from None
            writable = False
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
                if busy and time.monotonic() < deadline:
                    time.sleep(0.1)  # a predecessor killed a moment ago may still be exiting
                    continue
                holder = _holder(fd)
                os.close(fd)
                if busy:
                    raise UserError(
                        f"{ledger_path}: another im-prober daemon (pid {holder}) is using "
                        f"this ledger (lock {path}); stop it first, or give this one its own "
                        "ledger.path"
                    ) from None
                raise UserError(f"{path}: cannot lock the ledger: {exc.strerror or exc}") from None
        if writable:
            with contextlib.suppress(OSError):  # the pid only helps the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


# pg_try_advisory_lock(VANTAGE_LOCKS, hashtext(vantage)): one key space for vantage names.
VANTAGE_LOCKS = 0x494D5056  # "IMPV"


class VantageLock:
    """On a shared (PostgreSQL) ledger, one daemon per vantage name: a session advisory lock
    on a connection of its own, held until `release` or the end of the process (the server
    drops it with the connection, however the process ends). Two probers under one name
    would merge their attempts as if one had restarted. If the connection is lost while
    running the lock goes with it; `held()` says so."""

    def __init__(self, db: object, vantage: str) -> None:
        self._db = db
        self.vantage = vantage

    @classmethod
    def acquire(
        cls, url: str, password: str | None, vantage: str, wait: float = 3.0
    ) -> VantageLock:
        from .postgres import PostgresConnection

        db = PostgresConnection(url, password, readonly=False)
        deadline = time.monotonic() + wait
        try:
            while True:
                got = db.execute(
                    "SELECT pg_try_advisory_lock(?, hashtext(?))", (VANTAGE_LOCKS, vantage)
                ).fetchone()[0]
                if got:
                    return cls(db, vantage)
                if time.monotonic() >= deadline:
                    holder = db.execute(
                        "SELECT a.client_addr, a.application_name FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = "
                        "'advisory' AND l.classid = ? AND l.objid = hashtext(?)::oid",
                        (VANTAGE_LOCKS, vantage),
                    ).fetchone()
                    where = f" (from {holder[0] or 'a local socket'})" if holder else ""
                    raise UserError(
                        f"{db.where}: another im-prober daemon{where} is this ledger's vantage "
                        f"{vantage!r}; stop it first, or give this one its own `vantage`"
                    )
                time.sleep(0.2)  # a predecessor killed a moment ago may still be connected
        except BaseException:
            db.close()
            raise

    def held(self) -> bool:
        """Whether the lock's connection (and so the lock) is still there."""
        try:
            return bool(
                self._db.execute(  # type: ignore[attr-defined]
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                    "pid = pg_backend_pid() AND classid = ? AND objid = hashtext(?)::oid",
                    (VANTAGE_LOCKS, self.vantage),
                ).fetchone()[0]
            )
        except UserError:
            return False

    def release(self) -> None:
        self._db.close()  # type: ignore[attr-defined]
