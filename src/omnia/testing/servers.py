"""Private Redis and PostgreSQL servers on loopback, for tests and benchmarks.

The durable session stores are tested against real servers rather than
fakes, because what matters lives in the server and the driver: atomic
scripts, transactions, unique constraints, reconnecting after an outage. Each
helper starts a throwaway server in its own temporary directory on a free
loopback port, and can stop, crash, freeze and restart it *on the same port*,
so an outage test exercises the very reconnect path production would.

PostgreSQL refuses to run as root, so when the caller is root the cluster is
initialised and run as the unprivileged ``postgres`` user (created by the
Debian package), with a data directory that user owns.

Servers are started in a session of their own and reaped by a finalizer
even if the owner forgets ``close()``, so a crashed test run does not leave
servers behind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from omnia import processes

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
POSTGRES_ROOTS = (Path("/usr/lib/postgresql"),)

ServerT = TypeVar("ServerT", bound="Server")


class ServerNotInstalled(RuntimeError):
    """The server's binaries are missing on this machine."""


class ServerFailed(RuntimeError):
    """The server did not start (its log is in the message)."""


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def start_for_pytest(server_class: type[ServerT], **options) -> ServerT:
    """Start a server for a pytest fixture.

    Missing binaries skip the test on a developer's machine but fail it in
    CI (``CI`` set), where a silent skip would hide that nothing ran.
    """
    import pytest

    try:
        server = server_class(**options)
    except ServerNotInstalled as exc:
        message = f"{exc}; run scripts/install-test-deps"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server.start()
    return server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_binary() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server install (Debian layout), or ``pg_config``'s."""
    candidates = sorted(
        (
            path
            for root in POSTGRES_ROOTS
            if root.is_dir()
            for path in root.glob("*/bin")
            if (path / "postgres").is_file() and (path / "initdb").is_file()
        ),
        key=lambda path: _version_key(path.parent.name),
    )
    if candidates:
        return candidates[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _signal_all(pid: int, signum: int) -> None:
    for target in [pid, *processes.descendants(pid)]:
        try:
            os.kill(target, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL a server and everything below it, unless it is already gone.

    Checking ``poll()`` first matters: the pid of a reaped process may
    already belong to someone else.
    """
    if process.poll() is None:
        _signal_all(process.pid, signal.SIGKILL)
        process.wait()


class Server:
    """One server process in its own process group, restartable on one port."""

    name = "server"

    def __init__(self, *, port: int | None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"omnia-{self.name}-"))
        self._process: subprocess.Popen | None = None
        self._reaper: weakref.finalize | None = None
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)

    # --- lifecycle --------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it accepts requests."""
        if self.running:
            return
        log = open(self.log_path, "ab")
        try:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                **self._credentials(),
            )
        finally:
            log.close()
        self._reaper = weakref.finalize(self, _kill, self._process)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop(crash=True)
                raise ServerFailed(f"{self.name} did not start; its log:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: a clean shutdown, or ``crash=True`` for an abrupt one.

        A crash drops every connection at once without any shutdown work
        (no snapshot, no checkpoint), so the next start has to recover.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            _signal_all(process.pid, signal.SIGCONT)
            process.send_signal(self._crash_signal if crash else self._stop_signal)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _kill(process)
        self._wait_port_free()
        self._process = None
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None

    def restart(self, *, crash: bool = False) -> None:
        self.stop(crash=crash)
        self.start()

    def pause(self) -> None:
        """Freeze every process of the server (SIGSTOP): it accepts nothing and answers nothing.

        Unlike a stopped server, a frozen one leaves connections open and
        hanging, which is what exercises the clients' timeouts.
        """
        assert self._process is not None, f"{self.name} is not running"
        _signal_all(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause``; does nothing to a server that is not running."""
        if self.running:
            _signal_all(self._process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.stop(crash=True)
        self._cleanup()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self, *, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    _stop_signal = signal.SIGTERM
    _crash_signal = signal.SIGKILL

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _credentials(self) -> dict:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError


class RedisServer(Server):
    """``redis-server`` on 127.0.0.1, no persistence unless ``appendonly=True``.

    With ``appendonly=True`` every write is appended to the AOF before its
    reply is sent (``appendfsync always``), so acknowledged writes survive a
    crash of the process: that is what the crash tests use.
    """

    name = "redis"

    def __init__(self, *, port: int | None = None, binary: Path | None = None, appendonly: bool = False) -> None:
        found = binary or redis_binary()
        if found is None:
            raise ServerNotInstalled("redis-server is not installed (Debian package redis-server)")
        self.binary = found
        self.appendonly = appendonly
        super().__init__(port=port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        return [
            str(self.binary),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
        ]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class PostgresServer(Server):
    """A private PostgreSQL cluster on 127.0.0.1 with trust authentication.

    ``fsync=False`` (the default, for tests) turns off fsync: a crash of the
    server *processes* still loses nothing acknowledged (commits are written
    to the OS before they are acknowledged), only a crash of the machine would.
    """

    name = "postgres"
    _stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit
    # "Immediate" shutdown: every backend killed at once, no checkpoint, crash
    # recovery at the next start. Unlike SIGKILL of the whole group, the
    # postmaster still reaps its children, so no zombies are left behind.
    _crash_signal = signal.SIGQUIT

    def __init__(self, *, port: int | None = None, bindir: Path | None = None, fsync: bool = False) -> None:
        found = bindir or postgres_bindir()
        if found is None:
            raise ServerNotInstalled("PostgreSQL server binaries are not installed (Debian package postgresql)")
        self.bindir = found
        self.fsync = fsync
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        super().__init__(port=port)
        self.datadir = self.workdir / "data"
        if self._user is not None:
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        self._run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return self.database_url(name)

    def _initdb(self) -> None:
        self._run([
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self.workdir, **self._credentials()
        )
        if done.returncode != 0:
            raise ServerFailed(f"{command[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _command(self) -> list[str]:
        # Commits are still written to the OS before they are acknowledged
        # (synchronous_commit stays on), so killing the server loses nothing.
        durability = [] if self.fsync else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        return [
            str(self.bindir / "postgres"),
            "-D", str(self.datadir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.workdir}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=64MB",
            *durability,
        ]

    def _credentials(self) -> dict:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _ready(self) -> bool:
        # pg_isready, not a bare TCP connect: the postmaster accepts
        # connections while it recovers, but refuses queries until done.
        done = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-t", "1"],
            capture_output=True,
        )
        return done.returncode == 0
