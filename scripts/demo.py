"""`make demo`: run producer and consumer side by side (./input.txt → ./output.txt), say so once
both are connected, and stop both gracefully on one Ctrl-C.

Why it is more than two `&`: a terminal's Ctrl-C goes to every process of the foreground process
group. If the programs shared it with this launcher and make, the programs would get SIGINT from
the terminal and then a second signal forwarded by the launcher (a second signal forces their
exit), and make, interrupted itself, would end with an error whatever the programs did. So the
programs run in a process group of their own, handed the terminal as a shell hands it to a
foreground job: Ctrl-C reaches them alone, once. Without a terminal (a test, CI), SIGINT or
SIGTERM to the launcher is forwarded to them once; a second one forces them, as it would by hand.

Knobs for tests: DEMO_DIR (where input.txt and output.txt live; default the repository),
DEMO_PORTS ("PRODUCER CONSUMER" metrics ports; default "9101 9102")."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120


def terminal() -> int | None:
    """The terminal on stdin, if this launcher is in its foreground (else no hand-over)."""
    try:
        fd = sys.stdin.fileno()
        return fd if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp() else None
    except (OSError, ValueError):
        return None


def give_terminal(fd: int, group: int) -> None:
    # a background group that sets the foreground gets SIGTTOU unless it ignores it
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Group:
    """The programs' process group. A stop signal for the launcher is passed on as SIGTERM each
    time: the first asks for a graceful stop, a second forces it, as for the programs alone."""

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.stops_sent = 0

    def stop(self) -> None:
        if self.pgid is not None:
            self.stops_sent += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)

    def forward(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop()


def main() -> int:
    workdir = Path(os.environ.get("DEMO_DIR", REPO))
    producer_port, consumer_port = (
        int(p) for p in os.environ.get("DEMO_PORTS", "9101 9102").split()
    )
    (workdir / "input.txt").touch()
    env = {**os.environ, "LOGSHIP_LOG__FORMAT": os.environ.get("LOGSHIP_LOG__FORMAT", "text")}
    python = sys.executable

    def start(args: list[str], group: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [python, "-m", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            process_group=group,
        )

    group = Group()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, group.forward)
    consumer = start(["consumer", "--output", "output.txt", "--http.port", str(consumer_port)], 0)
    group.pgid = consumer.pid
    programs = {
        "consumer": consumer,
        "producer": start(
            [
                "producer",
                *("--input", "input.txt", "--checkpoint", "logship-producer.checkpoint"),
                *("--http.port", str(producer_port)),
            ],
            consumer.pid,
        ),
    }
    tty = terminal()
    if tty is not None:
        give_terminal(tty, consumer.pid)
    try:
        announce_when_ready(programs, producer_port, consumer_port)
        return wait_for_both(programs, group)
    finally:
        if any(p.poll() is None for p in programs.values()) and not group.stops_sent:
            group.stop()
        for program in programs.values():
            program.wait()
        if tty is not None:
            give_terminal(tty, os.getpgrp())


def announce_when_ready(
    programs: dict[str, subprocess.Popen[bytes]], producer_port: int, consumer_port: int
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (ready(producer_port) and ready(consumer_port)):
        if any(p.poll() is not None for p in programs.values()) or time.monotonic() > deadline:
            return  # wait_for_both says what happened
        time.sleep(0.2)
    print(
        f"""
  logship demo is running: both programs are connected. In another terminal:
      echo hi >> input.txt && sleep 1 && tail -n1 output.txt
  metrics: http://127.0.0.1:{producer_port}/metrics (producer), \
http://127.0.0.1:{consumer_port}/metrics (consumer)
  Ctrl-C stops both gracefully: what was read is shipped and written first.
""",
        flush=True,
    )


def wait_for_both(programs: dict[str, subprocess.Popen[bytes]], group: Group) -> int:
    """Both exit 0 on a graceful stop. If one fails, the other is stopped too (one that exits 0
    was stopped by the terminal, and so is the other: a signal now would force it). The
    launcher's exit code is 0 only if both exited 0."""
    while any(p.poll() is None for p in programs.values()):
        ended = [name for name, p in programs.items() if p.poll() not in (None, 0)]
        if ended and not group.stops_sent:
            code = programs[ended[0]].returncode
            print(f"logship demo: {ended[0]} exited with {code}, stopping", file=sys.stderr)
            group.stop()
        time.sleep(0.1)
    codes = {name: p.returncode for name, p in programs.items()}
    if not any(codes.values()):
        print("logship demo: both programs stopped cleanly", file=sys.stderr)
        return 0
    print(
        "logship demo: exit codes " + ", ".join(f"{n} {c}" for n, c in codes.items()),
        file=sys.stderr,
    )
    worst = next(c for c in codes.values() if c)
    return worst if worst > 0 else 128 - worst


if __name__ == "__main__":
    sys.exit(main())
