"""Opening SQLite files the taskloom way: path checks with clear errors, WAL mode, a busy
timeout, numbered schema migrations (``PRAGMA user_version``) and an application id so a
cache file is never mistaken for a run store.

Errors here name the file and say what to do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taskloom.errors import ConfigError, TaskloomError

Synchronous = Literal["normal", "full"]


class StoreError(TaskloomError):
    """A SQLite file could not be used."""


class DatabasePathError(ConfigError):
    """The database path cannot be used (missing or read-only directory, not a file)."""


class SchemaTooNew(StoreError):
    """The file was written by a newer taskloom-sqlite."""

    exit_code = 2


class DatabaseLocked(StoreError):
    """Another connection held the write lock for longer than the busy timeout."""


class DatabaseFull(StoreError):
    """The disk (or the file's size limit) is full."""


@dataclass(frozen=True)
class Schema:
    """What a file holds: ``migrations[i]`` takes it from version i to i + 1."""

    kind: str
    """What the file is, for messages: "run store", "response cache"."""
    application_id: int
    migrations: Sequence[Sequence[str]]

    @property
    def version(self) -> int:
        return len(self.migrations)


def check_path(path: Path, *, what: str, key: str, create_dir: bool) -> Path:
    """Make sure ``path`` can hold a database; create its directory when ``create_dir``.

    Raises DatabasePathError naming the path and the ``[plugins.sqlite]`` key to change.
    """
    path = path.expanduser()
    parent = path.parent
    fix = f"set [plugins.sqlite] {key} to a file in a writable directory"
    if not parent.exists():
        if not create_dir:
            raise DatabasePathError(f"{what} {path}: the directory {parent} does not exist; create it or {fix}")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabasePathError(
                f"{what} {path}: cannot create the directory {parent}: {exc.strerror}; {fix}"
            ) from None
    if not parent.is_dir():
        raise DatabasePathError(f"{what} {path}: {parent} is not a directory; {fix}")
    if path.exists() and path.is_dir():
        raise DatabasePathError(f"{what} {path}: is a directory, not a file; {fix}")
    # WAL mode creates -wal and -shm files next to the database, so the directory itself
    # must be writable even when the file already exists. Creating a file is the only test
    # that holds for root too (os.access ignores permission bits for root, and knows nothing
    # of read-only mounts or filesystems that refuse new files).
    reason = _cannot_create_in(parent)
    if reason is not None:
        raise DatabasePathError(f"{what} {path}: the directory {parent} is read-only ({reason}); {fix}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabasePathError(f"{what} {path}: the file is not readable and writable by this user; {fix}")
    return path


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None when one can): tries it."""
    probe = folder / f".taskloom-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:  # a probe left by a killed process: removing it is the test
            os.unlink(probe)
        except OSError as exc:
            return exc.strerror or type(exc).__name__
        return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return None


def connect(
    path: Path, *, what: str, key: str, busy_timeout: float, synchronous: Synchronous = "normal", readonly: bool = False
) -> sqlite3.Connection:
    """One connection in autocommit mode (transactions are explicit), WAL, busy timeout."""
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False, cached_statements=256
        )
    except sqlite3.OperationalError as exc:
        raise DatabasePathError(
            f"{what} {path}: cannot open the file ({exc}); set [plugins.sqlite] {key} to a file in a writable directory"
        ) from None
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if readonly:
            conn.execute("PRAGMA query_only=1")
        else:
            mode = _journal_mode_wal(conn, busy_timeout)
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"{what} {path}: cannot switch to WAL mode (got {mode}); is it on a network filesystem?"
                )
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" in str(exc) or "readonly" in str(exc):
            raise DatabasePathError(
                f"{what} {path}: cannot write the file ({exc}); set [plugins.sqlite] {key} "
                "to a file in a writable directory"
            ) from None
        raise translate(exc, what, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _journal_mode_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch to WAL, waiting up to ``busy_timeout`` for other connections: on a new file
    that several processes open at once, the switch needs a lock that SQLite refuses at once
    ("database is locked") instead of calling its busy handler."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def migrate(conn: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """Bring the file to ``schema.version``; returns the version found. A file from a newer
    version, or another application's file, is refused."""
    found = _check_identity(conn, schema, path)
    if found == schema.version:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _check_identity(conn, schema, path)  # another process may have migrated meanwhile
        for statements in schema.migrations[found:]:
            for sql in statements:
                conn.execute(sql)
        conn.execute(f"PRAGMA application_id={schema.application_id}")
        conn.execute(f"PRAGMA user_version={schema.version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


# One statement, so one snapshot: read one by one, a file another process is creating could
# show its tables but not yet its application id, and pass for another application's file.
_IDENTITY = (
    "SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id), "
    "(SELECT count(*) FROM sqlite_master)"
)


def _check_identity(conn: sqlite3.Connection, schema: Schema, path: Path) -> int:
    version, app, objects = (int(v) for v in conn.execute(_IDENTITY).fetchone())
    foreign = app not in (0, schema.application_id) or (app == 0 and (version > 0 or objects > 0))
    if foreign:
        raise StoreError(
            f"{path} is not a taskloom {schema.kind} (another application's SQLite file); "
            "point the path at another file"
        )
    if version > schema.version:
        raise SchemaTooNew(
            f"{schema.kind} {path} has schema version {version}, but this taskloom-sqlite knows only up to "
            f"version {schema.version}; upgrade taskloom-sqlite, or use another file"
        )
    return version


def open_database(
    path: Path,
    schema: Schema,
    *,
    key: str,
    busy_timeout: float,
    synchronous: Synchronous = "normal",
    create_dir: bool = False,
) -> sqlite3.Connection:
    path = check_path(path, what=schema.kind, key=key, create_dir=create_dir)
    conn = connect(path, what=schema.kind, key=key, busy_timeout=busy_timeout, synchronous=synchronous)
    try:
        migrate(conn, schema, path)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, schema.kind, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def translate(exc: BaseException, what: str, path: Path | str) -> BaseException:
    """A sqlite3 error as a taskloom error that names the file and says what to do."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text or "busy" in text:
        return DatabaseLocked(
            f"{what} {path} is locked by another connection ({text}); finished work is kept. "
            "Wait for the other process, or raise [plugins.sqlite] busy_timeout"
        )
    if code == sqlite3.SQLITE_FULL or "full" in text:
        return DatabaseFull(f"{what} {path}: the disk is full ({text}); finished work is kept. Free space and resume")
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return StoreError(f"{what} {path} is damaged ({text}); move it aside and start a new one")
    return StoreError(f"{what} {path}: {type(exc).__name__}: {text}")


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same write again later may succeed (lock, full disk, I/O)."""
    return isinstance(exc, DatabaseLocked | DatabaseFull) or (
        isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in ("locked", "busy", "full", "I/O"))
    )


def is_corrupt(exc: BaseException) -> bool:
    """Whether the error says the file is damaged (not merely busy)."""
    return isinstance(exc, sqlite3.DatabaseError) and any(
        w in str(exc) for w in ("malformed", "not a database", "file is encrypted")
    )


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm files) to ``<name>.corrupt-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            try:
                os.replace(side, target.with_name(target.name + suffix))
            except OSError:
                side.unlink(missing_ok=True)
    return target
