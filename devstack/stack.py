"""A private Mosquitto 2 and InfluxDB 1.x on free loopback ports, for the demo and the tests.

Both servers come from the Debian packages (``scripts/setup.sh`` installs them); this module
only writes their config under ``state_dir`` and runs them::

    state_dir/
      stack.json                       ports, URL and pids (StackInfo)
      mosquitto/mosquitto.conf         broker_config/mosquitto-dev.conf + port, paths, user
      mosquitto/mosquitto.log          the broker's log and its stdout/stderr
      mosquitto/data/                  persistence (mosquitto.db)
      influxdb/influxdb.conf           devstack/influxdb.conf.template, filled in
      influxdb/influxd.log             influxd's stdout/stderr
      influxdb/{meta,data,wal}/

Servers started by a :class:`Stack` in this process are its children: they are waited for
when stopped (no zombies) and, unless started with ``detach=True``, they get SIGTERM if this
process dies (``setpriv --pdeathsig``), so a killed test run leaves nothing behind. The
kernel sends that signal when the *thread* that started the server exits: start and restart
servers from a thread that outlives them (the main thread in tests).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_DEV_CONF = REPO_ROOT / "broker_config" / "mosquitto-dev.conf"
INFLUXDB_CONF_TEMPLATE = Path(__file__).resolve().parent / "influxdb.conf.template"

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
INFLUXD_BIN = "/usr/bin/influxd"
LOOPBACK = "127.0.0.1"

READY_TIMEOUT_S = 20.0
"""Seconds a server may take to answer after start before the start is called failed."""
STOP_TIMEOUT_S = 15.0
"""Seconds a server may take to exit after SIGTERM before it gets SIGKILL."""
_POLL_S = 0.02
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 30

ServerName = Literal["mosquitto", "influxdb"]
SERVER_NAMES: tuple[ServerName, ...] = ("mosquitto", "influxdb")


class StackError(RuntimeError):
    """A server could not be found, started or stopped; the message says what to do."""


class ServerNotInstalled(StackError):
    """mosquitto or influxd is missing on this machine."""


def _binary(name: ServerName) -> str:
    """The server executable's path, or :class:`ServerNotInstalled`."""
    candidates = [MOSQUITTO_BIN, "mosquitto"] if name == "mosquitto" else [INFLUXD_BIN, "influxd"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    package = "mosquitto" if name == "mosquitto" else "influxdb"
    raise ServerNotInstalled(
        f"{candidates[0]} is not installed (Debian package {package}); "
        "run ./scripts/setup.sh (or: sudo apt-get install mosquitto influxdb)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def influx_ping(url: str, timeout: float = 1.0) -> bool:
    """True when ``GET {url}/ping`` answers 204 (InfluxDB is up and serving)."""
    host_port = url.removeprefix("http://").rstrip("/")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 8086), timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 204
    except OSError:
        return False
    finally:
        conn.close()


def mqtt_connack(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an MQTT 3.1.1 CONNECT gets a CONNACK "accepted" (or "not authorized").

    A bare TCP connect would succeed while the broker is still reading its persistence file;
    a CONNACK means it serves clients. Raw bytes keep this free of paho's network thread.
    """
    # CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s, empty client id.
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + b"\x00\x00"
    connect = bytes([0x10, len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(connect)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
            # 0x00 accepted, 0x05 not authorized: a broker with anonymous access off (the
            # production auth config the security tests run) serves clients all the same.
            return reply in (b"\x20\x02\x00\x00", b"\x20\x02\x00\x05")
    except OSError:
        return False


@dataclass(frozen=True)
class StackInfo:
    """Where the private servers listen; what tests and the demo need to reach them."""

    mqtt_host: str
    mqtt_port: int
    influx_url: str
    """``http://127.0.0.1:<port>``, no trailing slash."""
    state_dir: Path
    mosquitto_pid: int | None = None
    influxdb_pid: int | None = None

    @property
    def json_path(self) -> Path:
        return self.state_dir / "stack.json"

    def env(self) -> dict[str, str]:
        """The ``FARMTEL_...`` variables that point the agent, ingest and CLI at this stack."""
        return {
            "FARMTEL_MQTT__HOST": self.mqtt_host,
            "FARMTEL_MQTT__PORT": str(self.mqtt_port),
            "FARMTEL_INFLUXDB__URL": self.influx_url,
        }

    def export_lines(self) -> str:
        """Shell-sourceable ``export NAME=value`` lines, one per variable of :meth:`env`."""
        return "".join(f"export {name}={value}\n" for name, value in self.env().items())

    def write(self, path: Path | None = None) -> Path:
        """Write this as JSON (default ``state_dir/stack.json``, replaced atomically)."""
        target = path or self.json_path
        data: dict[str, Any] = asdict(self)
        data["state_dir"] = str(self.state_dir)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: Path) -> StackInfo:
        """Read a ``stack.json``; :class:`StackError` naming the file if it is unusable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                mqtt_host=str(data["mqtt_host"]),
                mqtt_port=int(data["mqtt_port"]),
                influx_url=str(data["influx_url"]),
                state_dir=Path(data["state_dir"]),
                mosquitto_pid=_optional_int(data.get("mosquitto_pid")),
                influxdb_pid=_optional_int(data.get("influxdb_pid")),
            )
        except FileNotFoundError:
            raise StackError(
                f"{path} does not exist; start a stack first: python -m devstack start "
                f"--state {path.parent}"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StackError(f"{path} is not a usable stack.json ({err!r}); delete it") from None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (``R``, ``S``, ``T``, ``Z`` ...) or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name in parentheses may contain spaces; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0]


def _cmdline_has(pid: int, needle: str) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return needle.encode() in raw.split(b"\0")


def _tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as err:
        return f"(log {path} cannot be read: {err.strerror})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(log is empty)"


class _Server:
    """One server process: started from argv with its output in ``log_path``.

    Either our child (``proc`` set: waited for, never a zombie) or, when re-attached from
    stack.json by another process, only a pid (checked against its config path so a reused
    pid is never signalled).
    """

    def __init__(
        self,
        name: ServerName,
        conf_path: Path,
        log_path: Path,
        argv: Callable[[], list[str]],
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.conf_path = conf_path
        self.log_path = log_path
        self._argv = argv
        self._ready = ready
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._log_offset = 0

    def start(self, detach: bool) -> None:
        """Start the process (not waiting for it to serve); :class:`StackError` if it cannot."""
        if self.running():
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        argv = self._argv()
        if not detach and (setpriv := shutil.which("setpriv")):
            # The server gets SIGTERM when the starting thread dies, even by SIGKILL.
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            try:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.conf_path.parent,
                    env=self._env,
                    # Own session: a Ctrl-C meant for pytest or the shell does not reach it.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as err:
                raise StackError(f"cannot start {self.name} ({argv[0]}): {err}") from None
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the server serves; on failure stop it and raise with its log's tail."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ready():
                return
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                raise StackError(
                    f"{self.name} exited with code {code} while starting "
                    f"(config {self.conf_path}); last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise StackError(
                    f"{self.name} did not answer within {timeout:.0f} s "
                    f"(config {self.conf_path}); last lines of {self.log_path}:\n{tail}"
                )
            time.sleep(_POLL_S)

    def log_tail(self) -> str:
        """The last lines the server wrote since its latest start."""
        return _tail(self.log_path, self._log_offset)

    def running(self) -> bool:
        """True while the process exists and is not a zombie (a paused one counts as running)."""
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        state = _proc_state(self.pid)
        return state not in (None, "Z", "X") and _cmdline_has(self.pid, str(self.conf_path))

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process runs; silently nothing if it has gone."""
        if self.pid is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; always reaps our own child."""
        if self.running():
            self.send(signal.SIGTERM)
            # A paused (SIGSTOPped) server would sit on the SIGTERM until continued.
            self.send(signal.SIGCONT)
            if not self._wait_gone(timeout):
                self.send(signal.SIGKILL)
                self._wait_gone(timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL (a crash: no clean shutdown, no final persistence snapshot) and reap."""
        self.send(signal.SIGKILL)
        self._wait_gone(STOP_TIMEOUT_S)
        self._reap()

    def _wait_gone(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
        if self.proc is None and not self.running():
            self.pid = None


class Stack:
    """Private Mosquitto + InfluxDB under ``state_dir``; a context manager that stops them.

    ``start()`` picks free ports on the first start; later restarts of one server
    (:meth:`restart_mosquitto`, :meth:`start_influxdb` ...) keep its port and its data, so
    clients can reconnect to the same address. Failures raise :class:`StackError` with the
    tail of the server's log.
    """

    def __init__(self, state_dir: Path, mosquitto_conf: Path = MOSQUITTO_DEV_CONF) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.mosquitto_conf_source = mosquitto_conf
        self.mqtt_port = 0
        self.influx_port = 0
        self.influx_rpc_port = 0
        self.detached = False
        mq_dir = self.state_dir / "mosquitto"
        ix_dir = self.state_dir / "influxdb"
        self._mosquitto = _Server(
            "mosquitto",
            conf_path=mq_dir / "mosquitto.conf",
            log_path=mq_dir / "mosquitto.log",
            argv=lambda: [_binary("mosquitto"), "-c", str(mq_dir / "mosquitto.conf")],
            ready=lambda: mqtt_connack(LOOPBACK, self.mqtt_port),
        )
        # influxd lets INFLUXDB_* variables override its config file; keep ours authoritative.
        influx_env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}
        self._influxdb = _Server(
            "influxdb",
            conf_path=ix_dir / "influxdb.conf",
            log_path=ix_dir / "influxd.log",
            argv=lambda: [_binary("influxdb"), "run", "-config", str(ix_dir / "influxdb.conf")],
            ready=lambda: influx_ping(self.influx_url),
            env=influx_env,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, detach: bool = False) -> StackInfo:
        """Start both servers, wait until they serve, write ``stack.json`` and return where.

        ``detach=True`` lets the servers outlive this process (``python -m devstack start``);
        stop them later with ``Stack.attach(state_dir).stop()``. Raises
        :class:`ServerNotInstalled` or :class:`StackError` (both servers stopped again).
        """
        _binary("mosquitto")
        _binary("influxdb")
        self._refuse_if_another_stack_runs_here()
        self.detached = detach
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_on_free_port(self._mosquitto, self._configure_mosquitto)
            self._start_on_free_port(self._influxdb, self._configure_influxdb)
        except BaseException:
            self.stop()
            raise
        info = self.info()
        info.write()
        return info

    def stop(self) -> None:
        """Stop both servers (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`)."""
        self._influxdb.stop()
        self._mosquitto.stop()

    def __enter__(self) -> Stack:
        if self.mqtt_port == 0:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: Path) -> Stack:
        """A Stack for servers another process started (from ``state_dir/stack.json``).

        Its servers are not our children: :meth:`stop` signals them by pid (checked against
        their config path, so a reused pid is never hit) and waits until they are gone.
        """
        state = Path(state_dir).resolve()
        info = StackInfo.load(state / "stack.json")
        stack = cls(state)
        stack.mqtt_port = info.mqtt_port
        stack.influx_port = int(info.influx_url.rpartition(":")[2])
        stack.detached = True
        stack._mosquitto.pid = info.mosquitto_pid
        stack._influxdb.pid = info.influxdb_pid
        return stack

    def info(self) -> StackInfo:
        return StackInfo(
            mqtt_host=LOOPBACK,
            mqtt_port=self.mqtt_port,
            influx_url=self.influx_url,
            state_dir=self.state_dir,
            mosquitto_pid=self.mosquitto_pid,
            influxdb_pid=self.influxdb_pid,
        )

    @property
    def influx_url(self) -> str:
        return f"http://{LOOPBACK}:{self.influx_port}"

    @property
    def mosquitto_pid(self) -> int | None:
        return self._mosquitto.pid if self._mosquitto.running() else None

    @property
    def influxdb_pid(self) -> int | None:
        return self._influxdb.pid if self._influxdb.running() else None

    def running(self, server: ServerName) -> bool:
        return self._server(server).running()

    def log_tail(self, server: ServerName) -> str:
        """The last lines of a server's log since its latest start (for error messages)."""
        return self._server(server).log_tail()

    # -- fault injection --------------------------------------------------------------------

    def kill_mosquitto(self) -> None:
        """SIGKILL the broker: what it acked since its last snapshot is lost (a crash)."""
        self._mosquitto.kill()
        self._update_json()

    def stop_mosquitto(self) -> None:
        """Stop the broker cleanly (it writes its persistence snapshot)."""
        self._mosquitto.stop()
        self._update_json()

    def start_mosquitto(self) -> None:
        """Start the broker again on the same port with the same persistence; wait for it."""
        self._restart(self._mosquitto)

    def restart_mosquitto(self, graceful: bool = True) -> None:
        """Stop (SIGTERM, or SIGKILL when ``graceful`` is false) and start the broker again."""
        if graceful:
            self._mosquitto.stop()
        else:
            self._mosquitto.kill()
        self._restart(self._mosquitto)

    def stop_influxdb(self) -> None:
        """Stop InfluxDB cleanly; clients then get connection refused on its port."""
        self._influxdb.stop()
        self._update_json()

    def kill_influxdb(self) -> None:
        """SIGKILL InfluxDB; acknowledged writes survive in its WAL."""
        self._influxdb.kill()
        self._update_json()

    def start_influxdb(self) -> None:
        """Start InfluxDB again on the same port with the same data; wait until it answers."""
        self._restart(self._influxdb)

    def pause(self, server: ServerName) -> None:
        """SIGSTOP a server: its port stays open but nothing answers (a hung server)."""
        self._server(server).send(signal.SIGSTOP)

    def resume(self, server: ServerName) -> None:
        """SIGCONT a paused server."""
        self._server(server).send(signal.SIGCONT)

    # -- internals --------------------------------------------------------------------------

    def _server(self, name: ServerName) -> _Server:
        if name == "mosquitto":
            return self._mosquitto
        if name == "influxdb":
            return self._influxdb
        raise ValueError(f"server {name!r} is not one of {', '.join(SERVER_NAMES)}")

    def _start_on_free_port(self, server: _Server, configure: Callable[[bool], None]) -> None:
        """Start ``server`` on fresh free ports, trying again if another process took one."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            configure(True)
            server.start(self.detached)
            try:
                server.wait_ready()
                return
            except StackError as err:
                in_use = "address already in use" in str(err).lower()
                if not in_use or attempt == _PORT_ATTEMPTS:
                    raise

    def _refuse_if_another_stack_runs_here(self) -> None:
        """Two influxd on one data folder would corrupt it: refuse to start a second stack."""
        if not (self.state_dir / "stack.json").exists():
            return
        try:
            other = Stack.attach(self.state_dir)
        except StackError:
            return  # an unreadable stack.json is rewritten by this start
        live = [name for name in SERVER_NAMES if other.running(name)]
        if live:
            raise StackError(
                f"{' and '.join(live)} of another stack already run in {self.state_dir}; "
                f"stop them first: python -m devstack stop --state {self.state_dir}"
            )

    def _restart(self, server: _Server) -> None:
        if self.mqtt_port == 0:
            raise StackError("the stack was never started; call start() first")
        if server.running():
            raise StackError(f"{server.name} is already running (pid {server.pid})")
        server.start(self.detached)
        server.wait_ready()
        self._update_json()

    def _update_json(self) -> None:
        if (self.state_dir / "stack.json").exists():
            self.info().write()

    def _configure_mosquitto(self, new_ports: bool) -> None:
        if new_ports:
            self.mqtt_port = free_port()
        try:
            base = self.mosquitto_conf_source.read_text(encoding="utf-8")
        except OSError as err:
            raise StackError(
                f"broker config {self.mosquitto_conf_source} cannot be read ({err.strerror}); "
                "run devstack from a farmtel checkout"
            ) from None
        conf_dir = self._mosquitto.conf_path.parent
        data_dir = conf_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            base.rstrip("\n"),
            "",
            f"# ---- appended by devstack ({Path(__file__).name}) ----",
            f"listener {self.mqtt_port} {LOOPBACK}",
            # The trailing slash matters: mosquitto joins location and file name as strings.
            f"persistence_location {data_dir}/",
            f"log_dest file {self._mosquitto.log_path}",
        ]
        if os.geteuid() == 0:
            # As root mosquitto switches to the 'mosquitto' user and then cannot write its
            # persistence into our root-owned folder; the only sign is a line in its log.
            lines.append("user root")
        self._mosquitto.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _configure_influxdb(self, new_ports: bool) -> None:
        if new_ports:
            self.influx_port, self.influx_rpc_port = _free_ports(2)
        conf_dir = self._influxdb.conf_path.parent
        conf_dir.mkdir(parents=True, exist_ok=True)
        template = string.Template(INFLUXDB_CONF_TEMPLATE.read_text(encoding="utf-8"))
        text = template.substitute(
            http_port=self.influx_port,
            rpc_port=self.influx_rpc_port,
            meta_dir=conf_dir / "meta",
            data_dir=conf_dir / "data",
            wal_dir=conf_dir / "wal",
        )
        self._influxdb.conf_path.write_text(text, encoding="utf-8")
