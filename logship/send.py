"""`logship-send FILE|-`: POST a file or stdin to a producer's ingest API in chunks of whole lines,
retrying each chunk with its own Idempotency-Key, and print one receipt id per chunk: for shell
pipelines (`app | logship-send --url https://producer:9101`). Standard library only."""

from __future__ import annotations

import argparse
import io
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RETRYABLE = (429, 502, 503, 504)


def chunks(stream: io.BufferedReader, size: int) -> Iterator[bytes]:
    """Pieces up to the last newline of what has arrived (read1: a pipeline's lines go out as
    they come, not when `size` bytes have piled up); a line longer than `size` waits for its
    newline. A last line without its newline gets one: the API takes complete lines only."""
    held = b""
    while data := stream.read1(size):
        held += data
        cut = held.rfind(b"\n") + 1
        if cut:
            yield held[:cut]
            held = held[cut:]
    if held:
        yield held + b"\n"


class Sender:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.url.rstrip("/") + "/v1/lines" + ("?wait=written" if args.written else "")
        self.retries = args.retries
        self.timeout = args.timeout
        token = args.token or os.environ.get("LOGSHIP_SEND_TOKEN")
        if args.token_file:
            with open(args.token_file) as handle:
                token = handle.read().strip()
        self.headers = {"Content-Type": "application/octet-stream"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None

    def send(self, body: bytes) -> str:
        """The chunk's receipt id; retried on 429/5xx and lost connections, the same key each
        time so a chunk whose answer was lost lands once."""
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        delay = 0.5
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, body, headers, method="POST")
            try:
                with urllib.request.urlopen(
                    request, timeout=self.timeout, context=self.context
                ) as answer:
                    return str(json.loads(answer.read())["id"])
            except urllib.error.HTTPError as error:
                if error.code not in RETRYABLE or attempt == self.retries:
                    reason = error.read().decode(errors="replace").strip()
                    raise SystemExit(f"logship-send: HTTP {error.code}: {reason}") from None
                wait = float(error.headers.get("Retry-After") or delay)
            except (urllib.error.URLError, OSError) as error:
                if attempt == self.retries:
                    raise SystemExit(f"logship-send: {error}") from None
                wait = delay
            time.sleep(wait)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="logship-send",
        description="POST lines to a logship producer's ingest API; print one receipt id a chunk.",
        epilog="example: my-app | logship-send --url http://producer:9101 -",
    )
    parser.add_argument("file", metavar="FILE|-", help="file to send, or - for stdin")
    parser.add_argument(
        "--url",
        default=os.environ.get("LOGSHIP_SEND_URL", "http://127.0.0.1:9101"),
        help="the producer's HTTP address (LOGSHIP_SEND_URL)",
    )
    parser.add_argument("--token", help="bearer token (better: LOGSHIP_SEND_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--cafile", help="CA to verify an https producer with")
    parser.add_argument("--chunk-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--retries", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument(
        "--written", action="store_true", help="wait until a consumer wrote each chunk"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sender = Sender(args)
    if args.file == "-":
        stream = sys.stdin.buffer
        assert isinstance(stream, io.BufferedReader), "stdin is buffered"
    else:
        stream = open(args.file, "rb")  # noqa: SIM115 (closed below)
    try:
        for chunk in chunks(stream, max(1, args.chunk_bytes)):
            print(sender.send(chunk), flush=True)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
