"""The HTTP ingest API against the real producer and consumer and a real broker, through a real
HTTP client: POSTed lines land byte-identical, receipts turn written after the consumer's fsync,
retries with an Idempotency-Key land once, and the limits and the token hold."""

from __future__ import annotations

import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path

from consumer.statefile import read_record
from producer.openapi import spec_json
from tests.support.ingest_client import Ingest, ingest_producer, request
from tests.support.pipeline import REPO, Pipeline, wait_until


def lines(tag: str, count: int) -> bytes:
    return b"".join(
        f"{tag} {i:06d} \xc3\xa9\x00\xff\r end\n".encode("latin-1") for i in range(count)
    )


def written_ranges(output: Path, source: str) -> list[list[int]]:
    """What the consumer's state file records as written for `source` (after its fsync)."""
    found = read_record(output.with_name(output.name + ".state"))
    if found is None:
        return []
    ranges = json.loads(found[2])["sources"].get(source, [])
    assert isinstance(ranges, list)
    return ranges


def covers(ranges: list[list[int]], start: int, end: int) -> bool:
    return any(lo <= start and end <= hi for lo, hi in ranges)


def test_posted_lines_reach_the_output_byte_identical(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    # small batches: a large POST goes as several batches, cut like a file's
    _, api = ingest_producer(pipe, "--batch-max-bytes", "4096")
    bodies = [lines("a", 3), lines("b", 2000), b"\n", lines("c", 1)]
    expected = b""
    offset = 0
    for body in bodies:
        answer = api.post(body)
        assert answer.status == 200, answer.body
        receipt = answer.json()
        assert set(receipt) >= {"id", "source", "start", "end", "lines"}
        assert (receipt["start"], receipt["end"]) == (offset, offset + len(body))
        assert receipt["lines"] == body.count(b"\n")
        assert receipt["source"].startswith("http-")
        offset += len(body)
        expected += body
    zipped = api.post(gzip.compress(lines("d", 500)), headers={"Content-Encoding": "gzip"})
    assert zipped.status == 200 and zipped.json()["end"] - zipped.json()["start"] == len(
        lines("d", 500)
    )
    plain = api.post(b"text line\n", headers={"Content-Type": "text/plain; charset=utf-8"})
    assert plain.status == 200
    expected += lines("d", 500) + b"text line\n"
    assert pipe.wait_for_output(expected, timeout=30) == expected


def test_wait_written_answers_after_the_consumers_fsync(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    _, api = ingest_producer(pipe)
    body = lines("w", 100)
    answer = api.post(body, "?wait=written&timeout=20")
    assert answer.status == 200, answer.body
    receipt = answer.json()
    assert receipt["state"] == "written"
    # already durable and recorded when the answer came: the state file says so now
    assert covers(written_ranges(pipe.output, receipt["source"]), receipt["start"], receipt["end"])
    assert receipt["output"] == str(pipe.output)
    assert receipt["consumer"]
    output = pipe.output.read_bytes()
    assert output[receipt["output_start"] : receipt["output_end"]] == body
    again = api.receipt(receipt["id"]).json()
    assert again["state"] == "written" and again["output_end"] == receipt["output_end"]


def test_a_receipt_stays_confirmed_without_a_consumer_and_turns_written_when_it_returns(
    pipe: Pipeline,
) -> None:
    _, api = ingest_producer(pipe)
    body = lines("late", 50)
    answer = api.post(body)
    assert answer.status == 200 and answer.json()["state"] == "confirmed"
    receipt_id = answer.json()["id"]
    # nobody consumes: a wait ends at its timeout, still confirmed
    waited = api.receipt(receipt_id, "?wait=written&timeout=1")
    assert waited.status == 200 and waited.json()["state"] == "confirmed"
    held = api.post(lines("held", 5), "?wait=written&timeout=1")
    assert held.status == 202 and held.json()["state"] == "confirmed"
    pipe.consumer().ready()
    turned = api.receipt(receipt_id, "?wait=written&timeout=20").json()
    assert turned["state"] == "written"
    assert pipe.wait_for_output(body)[turned["output_start"] : turned["output_end"]] == body
    assert api.receipt("no-such-id").status == 404


def test_a_retried_post_with_the_same_idempotency_key_lands_once(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    _, api = ingest_producer(pipe)
    body = lines("once", 20)
    key = {"Idempotency-Key": "retry-42"}
    first = api.post(body, headers=key)
    second = api.post(body, headers=key)
    assert first.status == second.status == 200
    assert first.json()["id"] == second.json()["id"]
    assert api.post(lines("other", 1), headers=key).status == 422  # the key, another body
    after = lines("after", 3)
    last = api.post(after, "?wait=written&timeout=20")
    assert last.json()["state"] == "written"
    assert pipe.output.read_bytes() == body + after


def test_limits_and_the_token(pipe: Pipeline, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    _, api = ingest_producer(
        pipe, "--ingest.max-body-bytes", "1000", "--ingest.token-file", str(token_file)
    )
    body = lines("t", 3)
    # no token, another scheme, a wrong token: the same 401, saying nothing of the right one
    refusals = [
        api.post(body),
        api.post(body, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"}),
        Ingest(api.base, "s3cret").post(body),
        Ingest(api.base, "wrong").receipt("x"),
    ]
    assert {(a.status, a.body) for a in refusals} == {(401, b"unauthorized\n")}
    assert all(a.headers.get("WWW-Authenticate") == 'Bearer realm="logship"' for a in refusals)
    api.token = "s3cret-token"
    assert api.post(body).status == 200
    assert api.post(b"x" * 1500 + b"\n").status == 413
    bomb = gzip.compress(b"y" * 100_000 + b"\n")  # small on the wire, over the limit unpacked
    assert api.post(bomb, headers={"Content-Encoding": "gzip"}).status == 413
    no_newline = api.post(b"complete\nincomplete")
    assert no_newline.status == 400 and b"newline" in no_newline.body
    assert api.post(b"").status == 400
    assert api.post(body, headers={"Content-Type": "application/json"}).status == 415
    deflated = zlib.compress(body)  # aiohttp would inflate it: the API takes gzip only
    assert api.post(deflated, headers={"Content-Encoding": "deflate"}).status == 415
    assert api.post(b"bad gzip\n", headers={"Content-Encoding": "gzip"}).status == 400
    assert api.receipt("unknown").status == 404
    # probes and the description need no token
    assert request(f"{api.base}/livez").status == 200
    assert request(f"{api.base}/metrics").status == 200
    served = request(f"{api.base}/v1/openapi.json")
    assert served.status == 200 and served.body == spec_json()
    assert (REPO / "docs" / "openapi.json").read_bytes() == spec_json()
    assert wait_until(lambda: b'code="413"' in request(f"{api.base}/metrics").body, 5)


def test_logship_send_posts_stdin_in_chunks_and_prints_the_receipt_ids(pipe: Pipeline) -> None:
    pipe.consumer().ready()
    _, api = ingest_producer(pipe)
    data = lines("send", 3000) + b"last line without its newline"
    sent = subprocess.run(
        [sys.executable, "-m", "logship.send", "--url", api.base, "--chunk-bytes", "20000", "-"],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    ids = sent.stdout.decode().split()
    assert len(ids) > 3  # several chunks, one id each
    expected = data + b"\n"  # the last line was completed
    assert pipe.wait_for_output(expected, timeout=30) == expected
    assert all(api.receipt(i).json()["state"] in ("confirmed", "written") for i in ids)


def test_the_api_over_https(pipe: Pipeline, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pipe.consumer().ready()
    _, api = ingest_producer(pipe, "--http.tls-cert", str(cert), "--http.tls-key", str(key))
    secure = api.base.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))
    body = lines("tls", 10)
    req = urllib.request.Request(
        f"{secure}/v1/lines?wait=written&timeout=20",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=30, context=context) as answer:
        assert json.loads(answer.read())["state"] == "written"
    with urllib.request.urlopen(f"{secure}/livez", timeout=10, context=context) as answer:
        assert answer.status == 200
    assert pipe.output.read_bytes() == body


def test_a_slow_body_gets_408_and_frees_its_room(pipe: Pipeline) -> None:
    _, api = ingest_producer(pipe, "--ingest.read-timeout", "1")
    host, port = api.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            b"POST /v1/lines HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"only part of it\n"
        )
        answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    metrics = request(f"{api.base}/metrics").body
    assert b"logship_producer_ingest_in_flight_bytes 0.0" in metrics
    assert api.post(lines("after", 2)).status == 200
