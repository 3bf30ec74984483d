"""A private three-node RabbitMQ cluster on this machine (own names, ports, data dirs, one shared
cookie), joined with `rabbitmqctl join_cluster`, for failover tests."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.rabbit_node import RabbitNode, RabbitNodeError

# pause_minority: a node cut off from the majority stops serving clients rather than accept
# writes the majority never sees; with three nodes the two that still see each other carry on
PARTITION_HANDLING = "pause_minority"


def parallel(calls: list[Callable[[], None]]) -> None:
    """Run blocking calls in threads and re-raise the first failure once all have ended."""
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as error:  # collected, re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class RabbitCluster:
    """Three (or `size`) private nodes joined into one cluster. Node 0 is the seed the others
    join. Use it as a context manager so every VM is stopped::

        with RabbitCluster(tmp_path) as cluster:
            url = cluster.amqp_url          # every node, comma-separated
            cluster.leader("logs")          # the node leading a quorum queue
    """

    def __init__(self, base_dir: Path, *, size: int = 3) -> None:
        cookie = self.cookie = uuid.uuid4().hex.upper()
        tag = uuid.uuid4().hex[:6]
        self.nodes = [
            RabbitNode(
                base_dir,
                name=f"logship-c{tag}-{i}",
                cookie=cookie,
                extra_config=[f"cluster_partition_handling = {PARTITION_HANDLING}"],
            )
            for i in range(size)
        ]

    @property
    def amqp_url(self) -> str:
        """guest/guest on every node, in node order, as one logship --amqp.url."""
        hosts = ",".join(f"127.0.0.1:{n.amqp_port}" for n in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def start(self) -> None:
        """Boot every node at once, then join nodes 1.. to node 0."""
        parallel([n.start for n in self.nodes])
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name)
            node.ctl("start_app")
        self.wait_running(len(self.nodes))

    def running_nodes(self) -> list[str]:
        """Names of the nodes the cluster sees running, asked of any live node."""
        for node in self.nodes:
            if not node.is_running():
                continue
            with contextlib.suppress(RabbitNodeError):
                status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
                return list(status.get("running_nodes", []))
        return []

    def wait_running(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running_nodes()) < count:
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"cluster never had {count} running nodes")
            time.sleep(0.5)

    def node_by_port(self, port: int) -> RabbitNode:
        return next(n for n in self.nodes if n.amqp_port == port)

    def node_by_name(self, name: str) -> RabbitNode:
        return next(n for n in self.nodes if n.name == name)

    def queue_info(self, queue: str) -> dict[str, object]:
        """`leader` and `members` of a quorum queue, asked of any live node."""
        for node in self.nodes:
            if not node.is_running():
                continue
            with contextlib.suppress(RabbitNodeError, json.JSONDecodeError):
                rows = json.loads(
                    node.ctl("list_queues", "name", "leader", "members", "--formatter", "json")
                )
                for row in rows:
                    if row.get("name") == queue:
                        return dict(row)
        raise RabbitNodeError(f"no live node lists queue {queue}")

    def leader(self, queue: str) -> RabbitNode:
        return self.node_by_name(str(self.queue_info(queue)["leader"]))

    def isolate(self, node: RabbitNode, *, heal: bool = False) -> None:
        """Cut `node` off from the other nodes (or heal that): it uses a wrong cookie with each of
        them, so their distribution connections fail both ways while the CLI (another node name,
        the right cookie) still reaches it. A partition without touching the network."""
        cookie = self.cookie if heal else "partitioned"
        peers = ",".join(f"'{n.name}'" for n in self.nodes if n is not node)
        node.ctl(
            "eval",
            f"[begin erlang:set_cookie(N, '{cookie}'), erlang:disconnect_node(N) end"
            f" || N <- [{peers}]], ok.",
        )

    def stop(self) -> None:
        """Stop every node; the last one down must be the first one up, so stop all at once."""
        parallel([n.force_down for n in self.nodes])

    def discard(self) -> None:
        """Kill every node at once (no clean stop): for a throwaway cluster whose data nobody
        reads again."""
        parallel([n.discard for n in self.nodes])

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
