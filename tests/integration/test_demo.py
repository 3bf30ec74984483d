"""`make demo` does what its banner says: the banner comes once both programs are connected, a line
appended to input.txt reaches output.txt, and one Ctrl-C stops both gracefully: each logs its
clean stop, neither is forced, the script and make exit 0."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.support.pipeline import REPO, Topology, free_port, wait_until

BANNER = b"logship demo is running"


def demo_env(workdir: Path, topology: Topology) -> dict[str, str]:
    return {
        **os.environ,
        **topology.env(),
        "DEMO_DIR": str(workdir),
        "DEMO_PORTS": f"{free_port()} {free_port()}",
        "DEMO_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
    }


def default_sigint() -> None:
    # the suite may run with SIGINT ignored (started in the background); a terminal's child has
    # the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(fd: int, seen: bytearray, wanted: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty whose last holder closed it
                return
            if not chunk:
                return
            seen += chunk


def read_to_end(fd: int, seen: bytearray, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
        elif process.poll() is not None:
            return


def ships_a_line(workdir: Path) -> None:
    with (workdir / "input.txt").open("ab") as handle:
        handle.write(b"hello from the demo test\n")
    output = workdir / "output.txt"
    assert wait_until(
        lambda: output.exists() and output.read_bytes() == b"hello from the demo test\n", 30
    ), "the line never reached output.txt"


def assert_clean_stop(code: int, text: str) -> None:
    assert code == 0, text
    assert "producer_stopped" in text and "consumer_stopped" in text, text
    assert "forced_exit" not in text, text
    assert "both programs stopped cleanly" in text, text


def test_sigint_to_the_demo_process_group_stops_both_cleanly(
    tmp_path: Path, topology: Topology
) -> None:
    demo = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        env=demo_env(tmp_path, topology),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    assert demo.stdout is not None
    seen = bytearray()
    try:
        read_until(demo.stdout.fileno(), seen, BANNER, 60)
        assert BANNER in seen, seen.decode(errors="replace")
        # the banner comes once both answer /readyz (connected); the producer logs that it
        # watches its input a moment later, once its read loop has begun
        for started in (b"producer_watching", b"consumer_consuming"):
            read_until(demo.stdout.fileno(), seen, started, 10)
            assert started in seen, seen.decode(errors="replace")
        ships_a_line(tmp_path)
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal does to its foreground group
        read_to_end(demo.stdout.fileno(), seen, demo, 60)
        assert_clean_stop(demo.wait(30), seen.decode(errors="replace"))
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)


def make_demo_makefile(path: Path) -> None:
    """The Makefile's own demo recipe, without its install/broker prerequisites."""
    lines = (REPO / "Makefile").read_text().splitlines()
    at = lines.index(next(line for line in lines if line.startswith("demo:")))
    recipe = []
    for line in lines[at + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    path.write_text("SHELL := /bin/bash\ndemo:\n" + "\n".join(recipe) + "\n")


def test_ctrl_c_at_a_terminal_stops_both_cleanly_and_make_exits_0(
    tmp_path: Path, topology: Topology
) -> None:
    makefile = tmp_path / "demo.mk"
    make_demo_makefile(makefile)
    master, terminal = pty.openpty()

    def in_a_terminal() -> None:
        default_sigint()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes make's controlling terminal

    make = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), "-f", str(makefile), "demo"],
        env=demo_env(tmp_path, topology),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=in_a_terminal,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        read_until(master, seen, BANNER, 60)
        assert BANNER in seen, seen.decode(errors="replace")
        ships_a_line(tmp_path)
        os.write(master, b"\x03")  # Ctrl-C, as typed
        read_to_end(master, seen, make, 60)
        text = seen.decode(errors="replace")
        assert_clean_stop(make.wait(30), text)
        assert text.count("stop_requested") == 2, text  # one signal each, not two
        assert "make: ***" not in text, text
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        os.close(master)
