"""`logship status` against the real programs: the offsets and lag it shows are the bytes the test
wrote, as JSON and as plain text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from consumer.sink import recorded_size
from tests.support.pipeline import REPO, Pipeline, free_port, wait_until


def confirmed(pipe: Pipeline) -> int:
    """The confirmed offset of the one source, as the producer's checkpoint holds it."""
    try:
        sources = json.loads(pipe.checkpoint.read_bytes())["sources"]
    except (OSError, ValueError):
        return -1
    return int(sources[0]["offset"]) if sources else -1


def status(pipe: Pipeline, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **pipe.topology.env(), "PYTHONPATH": str(REPO)}
    args = ["--checkpoint", str(pipe.checkpoint), "--output", str(pipe.output), *extra]
    return subprocess.run(
        [sys.executable, "-m", "ops", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def status_json(pipe: Pipeline, *extra: str) -> dict[str, Any]:
    done = status(pipe, "--json", *extra)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_status_shows_offsets_and_lag_of_a_running_pipeline(pipe: Pipeline) -> None:
    ports = free_port(), free_port()  # the later --http.port wins over the harness's "off"
    consumer = pipe.consumer("--http.port", str(ports[1])).ready()
    pipe.producer("--http.port", str(ports[0])).ready()
    urls = [
        f"--producer-url=http://127.0.0.1:{ports[0]}",
        f"--consumer-url=http://127.0.0.1:{ports[1]}",
    ]
    data = b"".join(b"line %d of the status test\n" % i for i in range(2000))
    pipe.append(data)
    assert pipe.wait_for_output(data) == data
    # the consumer records the state just after the data, the producer its checkpoint a little
    # after the confirm: wait for both
    assert wait_until(lambda: recorded_size(pipe.output) == len(data), 30)
    assert wait_until(lambda: confirmed(pipe) == len(data), 30)

    caught_up = status_json(pipe, *urls)
    [source] = caught_up["sources"]
    assert source["path"] == str(pipe.input)
    assert (source["size"], source["read"], source["confirmed"], source["written"]) == (
        len(data),
        len(data),
        len(data),
        len(data),
    )
    assert (source["lag_bytes"], source["lag_seconds"]) == (0, 0)
    output = caught_up["output"]
    assert (output["size"], output["recorded"]) == (len(data), len(data))
    assert [(s["path"], s["written"]) for s in output["sources"]] == [(str(pipe.input), len(data))]
    broker = caught_up["broker"]
    assert broker["connected"] is True
    assert (broker["queue"]["name"], broker["queue"]["messages"]) == (pipe.topology.queue, 0)
    assert broker["queue"]["consumers"] == 1
    assert (broker["dead_letters"]["name"], broker["dead_letters"]["messages"]) == (
        pipe.topology.dead_queue,
        0,
    )
    assert caught_up["producer"]["state"] == caught_up["consumer"]["state"] == "ready"

    # the consumer stops: what is written next is read and confirmed, but lags in the output
    assert consumer.terminate() == 0
    more = b"written while the consumer is stopped\n" * 50
    pipe.append(more)
    total = len(data) + len(more)
    assert wait_until(lambda: confirmed(pipe) == total, 30)

    behind = status_json(pipe, *urls)
    [source] = behind["sources"]
    assert (source["size"], source["read"], source["confirmed"], source["written"]) == (
        total,
        total,
        total,
        len(data),
    )
    assert source["lag_bytes"] == len(more)
    assert source["lag_seconds"] > 0
    assert behind["broker"]["queue"]["messages"] >= 1
    assert behind["broker"]["queue"]["consumers"] == 0
    assert behind["consumer"]["state"] == "unreachable"

    plain = status(pipe, *urls)  # stdout is a pipe here: plain text
    assert plain.returncode == 0, plain.stderr
    [row] = [line.split() for line in plain.stdout.splitlines() if line.startswith(str(pipe.input))]
    assert row[:6] == [str(pipe.input), *map(str, (total, total, total, len(data), len(more)))]
    assert f"'{pipe.topology.queue}'" in plain.stdout


def test_status_asks_the_first_node_of_a_cluster_that_answers(pipe: Pipeline) -> None:
    live = pipe.topology.url.removeprefix("amqp://").split("@", 1)[1].split("/", 1)[0]
    pipe.consumer().ready()
    url = f"amqp://guest:guest@127.0.0.1:{free_port()},{live}/"
    broker = status_json(pipe, "--amqp.url", url, "--producer-url=", "--consumer-url=")["broker"]
    assert broker["connected"] is True and broker["queue"]["consumers"] == 1
