"""A thread-based TCP proxy that tests use to cut, refuse or stall connections to a broker."""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import struct
import threading
from types import TracebackType
from typing import Self

_POLL_S = 0.05
_CHUNK = 65536
_CONNECT_TIMEOUT_S = 5.0


class _Mode(enum.Enum):
    FORWARD = "forward"  # bytes flow both ways
    CUT = "cut"  # connections are reset, new ones reset on accept
    BLACKHOLE = "blackhole"  # connections stay open, no byte moves either way


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the peer sees "connection reset", as on a crash."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One client connection and its upstream twin, pumped both ways by one thread."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._close_lock = threading.Lock()

    def close(self, *, abrupt: bool) -> None:
        with self._close_lock:
            if self.closed.is_set():
                return
            self.closed.set()
            for sock in (self.client, self.upstream):
                if abrupt:
                    _reset(sock)
                else:
                    sock.close()


class TcpProxy:
    """Listen on 127.0.0.1:<free port> and forward every connection to ``target_host:target_port``.

    Sync and thread-based, so tests that run the real programs as subprocesses can point them at
    `port` and break the network under them::

        with TcpProxy("127.0.0.1", node.amqp_port) as proxy:
            ...  # producer connects to proxy.port
            proxy.cut()        # reset every connection, reset new ones too
            proxy.restore()    # accept and forward again
            proxy.blackhole()  # a partition: connections stay up, nothing moves, heartbeats lapse
            proxy.restore()    # the partition heals; bytes held back are delivered
    """

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"
    ) -> None:
        self._target = (target_host, target_port)
        self._listen_host = listen_host
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._mode = _Mode.FORWARD
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TcpProxy is not started")
        return self._port

    @property
    def connections(self) -> int:
        """How many client connections are currently open through the proxy."""
        with self._lock:
            return len(self._links)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._listen_host, 0))
        listener.listen(64)
        listener.settimeout(_POLL_S)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"tcp-proxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop listening and close every connection (gracefully, with a FIN)."""
        self._stopping.set()
        self._flowing.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_links(abrupt=False)
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)

    def cut(self) -> None:
        """Reset every open connection and every new one until `restore()`."""
        with self._lock:
            self._mode = _Mode.CUT
        self._flowing.set()
        self._close_links(abrupt=True)

    def blackhole(self) -> None:
        """Stop moving bytes but keep connections (and accept new ones): a network partition.

        Nothing is dropped: bytes wait in the socket buffers and flow again after `restore()`,
        as TCP retransmission would deliver them once a partition heals.
        """
        with self._lock:
            self._mode = _Mode.BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again, new connections and (after a blackhole) the ones held open."""
        with self._lock:
            self._mode = _Mode.FORWARD
        self._flowing.set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- threads ----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode is _Mode.CUT:
                _reset(client)
                continue
            self._open_link(client)

    def _open_link(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            _reset(client)  # the target is down: the client sees what it would see directly
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream)
        thread = threading.Thread(target=self._pump, args=(link,), daemon=True)
        with self._lock:
            self._links.add(link)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _pump(self, link: _Link) -> None:
        try:
            self._pump_until_closed(link)
        except (OSError, ValueError):
            pass  # the link was closed under us (cut/stop) or the peer reset it
        finally:
            link.close(abrupt=False)
            with self._lock:
                self._links.discard(link)

    def _pump_until_closed(self, link: _Link) -> None:
        peer = {link.client: link.upstream, link.upstream: link.client}
        while not link.closed.is_set() and not self._stopping.is_set():
            if not self._flowing.wait(_POLL_S):
                continue
            readable, _, _ = select.select(list(peer), [], [], _POLL_S)
            for sock in readable:
                data = sock.recv(_CHUNK)
                if not data:
                    return
                self._send_all(link, peer[sock], data)

    def _send_all(self, link: _Link, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if link.closed.is_set():
                return
            _, writable, _ = select.select([], [sock], [], _POLL_S)
            if writable:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    continue
                view = view[sent:]

    def _close_links(self, *, abrupt: bool) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close(abrupt=abrupt)
