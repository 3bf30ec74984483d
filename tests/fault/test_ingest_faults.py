"""The HTTP ingest API when things break, on a private node: a blocked broker gets 429 with
Retry-After and a flat producer memory, not a growing buffer; a producer killed mid-request loses
nothing it answered with an id."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fault.conftest import rss_bytes
from tests.support.ingest_client import Answer, Ingest, ingest_producer
from tests.support.pipeline import Pipeline, wait_until

MB = 1024 * 1024


def body_of(tag: int, size: int = 64 * 1024) -> bytes:
    line = f"{tag:08d} {'x' * 90}\n".encode()
    return line * (size // len(line))


def test_a_blocked_broker_gets_429_with_retry_after_and_flat_memory(
    fault_pipe: Pipeline, node: object
) -> None:
    from tests.support.rabbit_node import RabbitNode

    assert isinstance(node, RabbitNode)
    pipe = fault_pipe
    producer, api = ingest_producer(
        pipe,
        "--ingest.max-in-flight-bytes",
        str(1 * MB),
        "--ingest.confirm-timeout",
        "3",
        "--amqp.blocked-timeout",
        "60",
    )
    assert api.post(body_of(0)).status == 200
    assert producer.proc is not None
    before = rss_bytes(producer.proc.pid)
    node.set_memory_alarm(True)
    try:
        # 16 clients keep POSTing 64 KiB bodies: ~60 MiB offered while nothing is confirmed
        answers: list[Answer] = []
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: api.post(body_of(i), timeout=30), range(1, 960)))
        after = rss_bytes(producer.proc.pid)
        codes = [a.status for a in answers]
        assert codes.count(429) > 800, sorted(set(codes))
        assert set(codes) <= {200, 429, 503}, sorted(set(codes))
        assert all(a.headers.get("Retry-After") == "1" for a in answers if a.status == 429)
        # what a blocked publish holds is the window (1 MiB), not what was offered (~60 MiB)
        assert after - before < 20 * MB, f"RSS grew by {(after - before) // MB} MB"
    finally:
        node.set_memory_alarm(False)
    assert wait_until(lambda: api.post(body_of(99_999)).status == 200, 60)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_stop_mid_request_loses_nothing_answered_with_an_id(
    fault_pipe: Pipeline, signum: int
) -> None:
    """SIGKILL: what was answered with an id was confirmed, so it is in the output. SIGTERM: the
    same, and every request in hand gets an answer (200 once confirmed, or 503), none a 500."""
    pipe = fault_pipe
    pipe.consumer().ready()
    producer, api = ingest_producer(pipe)
    answered: list[bytes] = []
    codes: set[int] = set()
    stop = threading.Event()

    def client(worker: int) -> None:
        tag = worker * 1_000_000
        while not stop.is_set():
            tag += 1
            body = body_of(tag, 8 * 1024)
            try:
                answer = api.post(body, timeout=10)
            except OSError:
                continue  # the producer is gone: this POST got no id
            codes.add(answer.status)
            if answer.status == 200 and answer.json().get("id"):
                answered.append(body)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: len(answered) > 50, 30)
    producer.signal(signum)  # with requests in hand
    if signum == signal.SIGTERM:
        assert producer.wait(30) == 0
    else:
        producer.wait(10)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(15)
    assert answered
    assert codes <= {200, 503}, codes
    # every answered body is in the output, whole (confirmed by the broker before its answer)
    expected_size = sum(len(body) for body in answered)
    pipe.wait_for_output(expected_size, timeout=60)

    def all_there() -> bool:
        output = pipe.output.read_bytes()
        return all(body in output for body in answered)

    assert wait_until(all_there, 30), "a POST answered with an id is missing from the output"
    # a restarted producer ships under a new ingest source: nothing it sends is mistaken for
    # what the first one sent (both offsets start at 0)
    _, again = ingest_producer(pipe)
    fresh = body_of(7_777_777)
    answer = again.post(fresh, "?wait=written&timeout=30")
    assert answer.status == 200, answer.body
    assert answer.json()["start"] == 0 and fresh in pipe.output.read_bytes()
    assert isinstance(again, Ingest)
