"""Per-stage timing end to end: after a short run through a real broker, every stage of the path
has observations in the programs' own /metrics (logship/stages.py)."""

from __future__ import annotations

import time
import urllib.request

from logship.stages import CONSUMER_STAGES, PRODUCER_STAGES, parse_histogram, quantile
from tests.support.pipeline import Pipeline, free_port, wait_until


def stage_counts(port: int, component: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    parsed = parse_histogram(text, f"logship_{component}_stage_seconds")
    return {stage: buckets[-1][1] for stage, buckets in parsed.items()}


def test_every_stage_is_timed_while_lines_flow(pipe: Pipeline) -> None:
    cport, pport = free_port(), free_port()
    pipe.consumer("--http.port", str(cport)).ready()
    pipe.input.touch()
    pipe.producer("--http.port", str(pport)).ready()
    expected = b""
    for i in range(20):  # a steady trickle: looks that find the file growing, and quiet ones
        chunk = b"".join(b"line %d.%d\n" % (i, j) for j in range(50))
        pipe.append(chunk)
        expected += chunk
        time.sleep(0.02 if i % 5 else 0.3)
    assert pipe.wait_for_output(expected, timeout=30) == expected

    def counted() -> bool:
        producer = stage_counts(pport, "producer")
        consumer = stage_counts(cport, "consumer")
        return all(producer[s] > 0 for s in PRODUCER_STAGES) and all(
            consumer[s] > 0 for s in CONSUMER_STAGES
        )

    assert wait_until(counted, 10), (
        stage_counts(pport, "producer"),
        stage_counts(cport, "consumer"),
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{cport}/metrics", timeout=5) as reply:
        parsed = parse_histogram(reply.read().decode(), "logship_consumer_stage_seconds")
    # one observation per group, not per line
    assert parsed["written_to_synced"][-1][1] <= 20 * 50
    p99 = quantile(parsed["publish_to_delivery"], 0.99)
    assert p99 is not None and 0 < p99 < 5
