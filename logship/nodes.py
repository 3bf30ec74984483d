"""Broker addresses: parsing a URL that names several nodes of one cluster, and the ring that
chooses which node each connection attempt goes to."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class Node:
    """One broker node as the clients reach it."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class BrokerUrl:
    """`amqp[s]://[user[:password]@]host[:port][,host[:port]...][/vhost][?options]`: every node
    shares the scheme, credentials, vhost and options; only host and port differ."""

    scheme: str
    username: str | None
    password: str | None
    nodes: tuple[Node, ...]
    path: str
    query: str

    def node_url(self, node: Node, userinfo: str) -> str:
        """The single-node URL of `node`; `userinfo` is what goes before '@' (already quoted)."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{userinfo}@{node}{self.path or '/'}{query}"


def _parse_node(text: str, default_port: int) -> Node:
    if not text:
        raise ValueError("has an empty host in its list of nodes")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"has a malformed IPv6 address ({text})")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise ValueError(f"has an IPv6 address without brackets ({text}); write [addr]:port")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"has no host in '{text}'")
    if not port_text:
        return Node(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"has a port that is not a number from 1 to 65535 ({text})")
    return Node(host, int(port_text))


def parse_broker_url(text: str) -> BrokerUrl:
    """Split a broker URL into its shared parts and its nodes. Raises ValueError with the reason
    (worded to follow the setting's name: 'must start with…', 'has no host')."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        got = scheme if sep else "none"
        raise ValueError(f"must start with amqp:// or amqps:// (got {got}://)")
    scheme = scheme.lower()
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text)
        password = unquote(password_text) if colon else None
    if not hosts:
        raise ValueError("has no host")
    default_port = DEFAULT_PORTS[scheme]
    nodes = tuple(_parse_node(part.strip(), default_port) for part in hosts.split(","))
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"names a node twice ({hosts})")
    return BrokerUrl(scheme, username, password, nodes, slash + path, query)


class NodeRing:
    """Which node the next connection attempt goes to. The ring starts at a random node (so a
    fleet of clients spreads over the cluster) and moves on after every attempt; a node that
    refused or dropped us is skipped for `hold` seconds, unless every node is down, when the one
    marked longest ago is tried."""

    def __init__(
        self,
        nodes: Sequence[Node],
        *,
        hold: float = 30.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not nodes:
            raise ValueError("a ring needs at least one node")
        self.nodes = tuple(nodes)
        self._hold = hold
        self._clock = clock
        self._index = (rng or random.Random()).randrange(len(self.nodes)) - 1
        self._down: dict[Node, float] = {}

    def next(self) -> Node:
        """The node to try now: the next one in order that is not held down."""
        now = self._clock()
        count = len(self.nodes)
        for step in range(1, count + 1):
            candidate = self.nodes[(self._index + step) % count]
            since = self._down.get(candidate)
            if since is None or now - since >= self._hold:
                self._index = (self._index + step) % count
                return candidate
        oldest = min(self.nodes, key=lambda n: self._down[n])
        self._index = self.nodes.index(oldest)
        return oldest

    def down(self, node: Node) -> None:
        """`node` refused an attempt or dropped the connection: skip it for a while."""
        self._down[node] = self._clock()

    def up(self, node: Node) -> None:
        """A connection to `node` was made: it is a candidate again at once."""
        self._down.pop(node, None)

    def all_down(self) -> bool:
        """Every node refused or dropped us within `hold`: time to back off."""
        return all(self.is_down(node) for node in self.nodes)

    def is_down(self, node: Node) -> bool:
        since = self._down.get(node)
        return since is not None and self._clock() - since < self._hold
