"""A private throwaway RabbitMQ node (own ports, data, cookie) for fault/alarm/TLS/ACL tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

_BOOT_TIMEOUT_S = 60
_CLI_TIMEOUT_S = 90
_LOG_TAIL_LINES = 60
# Startup failures that a fresh set of ports cures; matched against the node log and CLI output.
_PORT_CLASH_MARKERS = ("eaddrinuse", "could_not_start_listener", "dist_port_already_used")


class RabbitNodeError(RuntimeError):
    """A private node failed to start, stop or answer a CLI command."""


def find_scripts_dir() -> Path:
    """Return the rabbitmq-server package's own bin directory (not the PATH wrappers).

    The wrappers on PATH switch to the rabbitmq user and its cookie: a private node must not.
    """
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "rabbitmq-server"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RabbitNodeError("the rabbitmq-server Debian package is not installed") from exc
    for line in listing.splitlines():
        if line.endswith("/rabbitmq/bin/rabbitmq-server"):
            return Path(line).parent
    raise RabbitNodeError("rabbitmq-server package lists no rabbitmq/bin/rabbitmq-server")


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RabbitNodeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _make_ca(directory: Path, stem: str, common_name: str) -> Path:
    """Create a self-signed CA (EC P-256, quick to generate) as `<stem>.pem` + `<stem>.key`."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{stem}.key", "-out", f"{stem}.pem", "-days", "7",
        "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{stem}.pem"


def _make_server_cert(directory: Path) -> None:
    """Create server.pem/server.key for localhost and 127.0.0.1, signed by ca.pem."""
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "7", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class RabbitNode:
    """A RabbitMQ node of its own, booted from the installed Debian package.

    Everything (cookie, config, data, logs, certificates) lives under ``base_dir/<name>``; ports are
    picked free on 127.0.0.1 and kept across `restart()`, so durable queues and persistent messages
    survive it. Use it as a context manager to always stop it::

        with RabbitNode(tmp_path, prometheus=True) as node:
            node.set_memory_alarm(True)
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        name: str | None = None,
        tls: bool = False,
        prometheus: bool = False,
        cookie: str | None = None,
        extra_config: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._name = name or f"logship-{uuid.uuid4().hex[:8]}"
        self._tls = tls
        self._prometheus = prometheus
        # nodes of one cluster share a cookie; a lone node gets its own
        self._cookie = cookie or uuid.uuid4().hex.upper()
        # rabbitmq.conf lines appended to the node's own, e.g. a deployment's memory settings
        self._extra_config = tuple(extra_config)
        # environment of the server and the CLI on top of the node's own, e.g. RABBITMQ_LOG_BASE
        self._extra_env = dict(extra_env or {})
        self._scripts = find_scripts_dir()
        self._dir = Path(base_dir) / self._name
        self._ports: dict[str, int] = {}
        self._ever_started = False
        self._server: subprocess.Popen[bytes] | None = None
        self._pick_ports()
        self._prepare_files()

    # -- public API -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The Erlang node name, ``name@localhost``."""
        return f"{self._name}@localhost"

    @property
    def directory(self) -> Path:
        """The node's own directory: home, config, data, logs and certificates."""
        return self._dir

    @property
    def amqp_port(self) -> int:
        return self._ports["amqp"]

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (the CLI tools talk to the node through it)."""
        return self._ports["dist"]

    @property
    def amqp_url(self) -> str:
        """guest/guest on the plain listener (guest may only log in over loopback, as here)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def prometheus_port(self) -> int:
        if not self._prometheus:
            raise RabbitNodeError("this node was created with prometheus=False")
        return self._ports["prometheus"]

    @property
    def tls_port(self) -> int:
        if not self._tls:
            raise RabbitNodeError("this node was created with tls=False")
        return self._ports["tls"]

    @property
    def amqps_url(self) -> str:
        """guest/guest on the TLS listener; the server certificate is valid for ``localhost``."""
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server certificate."""
        self.tls_port  # noqa: B018 - raises unless tls=True
        return self._dir / "tls" / "ca.pem"

    @property
    def wrong_ca_file(self) -> Path:
        """An unrelated CA: verifying the server against it must fail."""
        self.tls_port  # noqa: B018 - raises unless tls=True
        return self._dir / "tls" / "wrong_ca.pem"

    @property
    def log_file(self) -> Path:
        return self._dir / "log" / f"{self.name}.log"

    @property
    def server_output(self) -> Path:
        """stdout and stderr of rabbitmq-server: what the VM says before its log is open."""
        return self._dir / "log" / "server.out"

    @property
    def pid_file(self) -> Path:
        return self._dir / f"{self._name}.pid"

    def start(self) -> None:
        """Boot the node and wait until it accepts connections (≈6 s).

        A first boot that fails on a port clash (a port taken since it was picked) is retried once
        on fresh ports; any other failure raises `RabbitNodeError` with the tail of the node log.
        """
        try:
            self._boot()
        except RabbitNodeError as exc:
            self._force_down()  # a half-booted VM may linger; never leave one behind
            if self._ever_started or not self._is_port_clash(str(exc)):
                raise
            self._pick_ports()
            self._write_config()
            try:
                self._boot()
            except RabbitNodeError:
                self._force_down()
                raise
        self._ever_started = True

    def stop(self) -> None:
        """Shut the node down cleanly and wait until its VM has exited.

        ``rabbitmqctl stop`` plus our own fast poll of the pid: ``rabbitmqctl shutdown`` does the
        same but polls slowly and takes ~2 s longer.
        """
        pid = self._os_pid()
        self.ctl("stop", timeout=_CLI_TIMEOUT_S)
        if pid is not None:
            self._wait_gone(pid, timeout=_CLI_TIMEOUT_S)
        self._reap_server()

    def restart(self) -> None:
        """Stop then start on the same ports and data: durable state survives."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the Erlang VM (a crash: no clean shutdown) and wait until it is gone."""
        pid = self._os_pid()
        if pid is None:
            raise RabbitNodeError(f"no pid file for {self.name}: not started?")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, timeout=10)
        self._reap_server()

    def discard(self) -> None:
        """SIGKILL the VM and its process group without a clean stop: for a throwaway node whose
        data nobody reads again (a fixture's teardown), where ``rabbitmqctl stop`` costs seconds
        (a CLI VM to boot, then the node's own shutdown) and proves nothing."""
        pid = self._os_pid()
        if pid is not None and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, timeout=10)
        self._reap_server(kill=True)

    def force_down(self) -> None:
        """Stop cleanly if possible, else SIGKILL; nothing to do for a node already down."""
        self._force_down()

    def is_running(self) -> bool:
        pid = self._os_pid()
        return pid is not None and _pid_alive(pid)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -q -n NODE ARGS``; return its stdout, raise with stderr on failure."""
        return self._run_cli("rabbitmqctl", "-q", "-n", self.name, *args, timeout=timeout)

    def set_memory_alarm(self, on: bool) -> None:
        """Raise (1 MB watermark) or clear (back to 0.4) the memory alarm that blocks publishers."""
        if on:
            self.ctl("set_vm_memory_high_watermark", "absolute", "1MB")
        else:
            self.ctl("set_vm_memory_high_watermark", "0.4")

    def add_user(self, name: str, password: str, configure: str, write: str, read: str) -> None:
        """Create a user with these permission regexps on vhost "/" (``''`` grants nothing)."""
        self.ctl("add_user", name, password)
        self.ctl("set_permissions", "-p", "/", name, configure, write, read)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the node log, for failure messages."""
        return _tail(self.log_file, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            exc.add_note(f"--- tail of {self.log_file} ---\n{self.log_tail()}")
        self._force_down()

    # -- booting ---------------------------------------------------------------------------------

    def _boot(self) -> None:
        # A stale pid file (after kill()) would make `rabbitmqctl wait` watch a dead pid.
        self.pid_file.unlink(missing_ok=True)
        # Run in the foreground as our child rather than `-detached`: a VM that dies early (e.g. the
        # distribution port was taken) then fails at once, with its stderr, instead of making
        # `rabbitmqctl wait` time out after 60 s with nothing in the log.
        with self.server_output.open("ab") as out:
            self._server = subprocess.Popen(
                [str(self._scripts / "rabbitmq-server")],
                env=self._env(),
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest must not reach the node
            )
        waiter = subprocess.Popen(
            [str(self._scripts / "rabbitmqctl"), "-n", self.name, "wait",
             "--timeout", str(_BOOT_TIMEOUT_S), str(self.pid_file)],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        problem = self._await_boot(self._server, waiter)
        if problem is not None:
            raise RabbitNodeError(f"{self.name} did not boot: {problem}\n{self._diagnostics()}")

    def _await_boot(
        self, server: subprocess.Popen[bytes], waiter: subprocess.Popen[str]
    ) -> str | None:
        """Wait for `rabbitmqctl wait`; return why the boot failed, or None once it is up."""
        deadline = time.monotonic() + _BOOT_TIMEOUT_S + 30
        while True:
            try:
                out, err = waiter.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if server.poll() is not None or time.monotonic() > deadline:
                    waiter.kill()
                    waiter.communicate()
                    if server.returncode is None:
                        return "rabbitmqctl wait did not return"
                    return f"rabbitmq-server exited with status {server.returncode}"
        if waiter.returncode != 0:
            return f"rabbitmqctl wait exited {waiter.returncode}: {(err or out).strip()}"
        return None

    def _diagnostics(self) -> str:
        return (
            f"--- tail of {self.server_output} ---\n{_tail(self.server_output, 15)}\n"
            f"--- tail of {self.log_file} ---\n{_tail(self.log_file, _LOG_TAIL_LINES)}"
        )

    def _is_port_clash(self, message: str) -> bool:
        text = " ".join(
            [message, _tail(self.server_output, 200), _tail(self.log_file, 2000)]
        ).lower()
        return any(marker in text for marker in _PORT_CLASH_MARKERS)

    def _force_down(self) -> None:
        """Stop cleanly if possible, else SIGKILL: never leave a VM behind."""
        pid = self._os_pid()
        if pid is not None and _pid_alive(pid):
            try:
                self.stop()
            except RabbitNodeError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, timeout=10)
        self._reap_server(kill=True)

    def _reap_server(self, *, kill: bool = False) -> None:
        """Collect the rabbitmq-server script (it exits with its VM); `kill` its whole group."""
        server, self._server = self._server, None
        if server is None:
            return
        if kill and server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"rabbitmq-server for {self.name} did not exit") from exc

    def _os_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _wait_gone(self, pid: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"{self.name} (pid {pid}) still running after {timeout} s")
            time.sleep(0.05)

    def _run_cli(self, script: str, *args: str, timeout: float) -> str:
        try:
            proc = subprocess.run(
                [str(self._scripts / script), *args],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"{script} {' '.join(args)} timed out after {timeout} s") from exc
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
            raise RabbitNodeError(f"{script} {' '.join(args)} exited {proc.returncode}: {detail}")
        return proc.stdout

    # -- files and environment --------------------------------------------------------------------

    def _pick_ports(self) -> None:
        names = ["amqp", "dist"]
        if self._prometheus:
            names.append("prometheus")
        if self._tls:
            names.append("tls")
        self._ports = dict(zip(names, free_ports(len(names)), strict=True))

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_")) and key != "CONF_ENV_FILE"
        }
        env.update(
            HOME=str(self._dir / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self._dir / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self._ports["amqp"]),
            RABBITMQ_DIST_PORT=str(self._ports["dist"]),
            RABBITMQ_CONFIG_FILE=str(self._dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self._dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self._dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self._dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self._dir / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_CRASH_DUMP=str(self._dir / "log" / "erl_crash.dump"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        env.update(self._extra_env)
        return env

    def _prepare_files(self) -> None:
        if self._dir.exists():
            shutil.rmtree(self._dir)
        for sub in ("home", "mnesia", "log"):
            (self._dir / sub).mkdir(parents=True)
        # Our own cookie, written before the server and the CLI could race to create it.
        cookie = self._dir / "home" / ".erlang.cookie"
        cookie.write_text(self._cookie)
        cookie.chmod(0o400)
        (self._dir / "rabbitmq-env.conf").write_text("")
        (self._dir / "advanced.config").write_text("[].\n")
        plugins = "[rabbitmq_prometheus]" if self._prometheus else "[]"
        (self._dir / "enabled_plugins").write_text(f"{plugins}.\n")
        if self._tls:
            tls_dir = self._dir / "tls"
            tls_dir.mkdir()
            _make_ca(tls_dir, "ca", "logship-test-ca")
            _make_server_cert(tls_dir)
            _make_ca(tls_dir, "wrong_ca", "logship-wrong-ca")
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self._ports['amqp']}",
            "loopback_users.guest = true",
            # Queue stats (and so Prometheus values) refresh every second instead of every 5 s.
            "collect_statistics_interval = 1000",
            "log.file.level = info",
            "log.console = false",
        ]
        if self._prometheus:
            lines += [
                "prometheus.tcp.ip = 127.0.0.1",
                f"prometheus.tcp.port = {self._ports['prometheus']}",
                "prometheus.return_per_object_metrics = true",
            ]
        if self._tls:
            tls_dir = self._dir / "tls"
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self._ports['tls']}",
                f"ssl_options.cacertfile = {tls_dir / 'ca.pem'}",
                f"ssl_options.certfile = {tls_dir / 'server.pem'}",
                f"ssl_options.keyfile = {tls_dir / 'server.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        lines += self._extra_config
        (self._dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
