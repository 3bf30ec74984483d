"""A seeded model-based simulator: random interleavings of writes, rotations, truncations, rewrites,
output rotations and crashes, driven against the real producer and consumer, with an oracle that
knows every byte written and which losses nobody could prevent.

One scenario is `Scenario(seed, workdir, topology, kinds).run()`: it returns a `Verdict`; its
`report()` holds the seed, the op log with timestamps and a short diff summary. The same seed draws
the same ops and pauses; the processes' timing is the machine's, so a replay reproduces the
interleaving closely, not exactly (run a failing seed a few times).

Oracle. Every byte is written by the model, so the expected output is the concatenation of the
file *generations* in the order they were begun (a generation is one file's content from its
creation, or its truncation, to its end), each byte exactly once, in order, minus what could be
lost. A generation is *loss-prone* when the only file holding its bytes was truncated, rewritten
in place or deleted: the producer may not have read all of it by then (behind, or down). Its
allowed loss is a suffix (the producer reads a file in order). Two modes:

- `suffix`: any suffix of a loss-prone generation may be missing; everything else must arrive.
- `reported`: the missing suffix must also be reported by the producer, a `bytes_lost` log event
  (fields path, source, start, end, bytes, reason) whose path is one the generation had and whose
  start is at or before where the output of that generation stops. A generation the producer
  never saw (begun and ended while it was down) is exempt: nobody could know it existed. So is
  the rest of a file rewritten in place with new content that starts with everything the producer
  had read of it: byte for byte, that is the old file grown (those lines are shipped once).

"Down" for the model is from a stop until an await op saw the restarted producer watching; the
ops drawn depend only on the seed and this state, never on timing.

`auto` (the default) picks `reported` when the producer's code knows the `bytes_lost` event.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pipeline import REPO, Pipeline, Program, Topology, wait_until

# Every op kind the simulator knows. Ops are drawn only from the enabled kinds; the test module
# says which are enabled by default.
KINDS = (
    "append",  # whole lines
    "partial",  # a line's first bytes now, the rest (finish) later
    "rename",  # input.txt → input.txt.1 (the old .1 deleted), maybe create input.txt
    "chain",  # .2 → .3, .1 → .2, input.txt → .1 (the old .3 deleted)
    "copytruncate",  # chain, copy input.txt to .1, truncate input.txt
    "copytruncate_fast",  # copytruncate with no quiet time after the last write
    "truncate",  # : > input.txt
    "rewrite",  # cat new > input.txt, new content starting with the old first line
    "delete",  # rm input.txt, maybe re-create it
    "kill_producer",  # SIGKILL, restart later
    "kill_consumer",
    "term_producer",  # SIGTERM (clean stop), restart later
    "term_consumer",
    "outage_rotation",  # rename/chain/copytruncate/rewrite while the producer is down
    "outage_truncate",  # truncate/delete while the producer is down
    "eager_rotation",  # rotate without waiting for a running producer to catch up
    "split_partial",  # rotate while a partial line is pending (the writer finishes it later)
    "output_rotation",  # mv output.txt output.txt.N; kill -HUP consumer
)
WEIGHTS = {
    "append": 8,
    "partial": 2,
    "finish": 2,
    "rename": 2,
    "chain": 1,
    "copytruncate": 2,
    "copytruncate_fast": 1,
    "truncate": 1,
    "rewrite": 1,
    "delete": 1,
    "kill_producer": 1.5,
    "kill_consumer": 1.5,
    "term_producer": 0.7,
    "term_consumer": 0.7,
    "start_producer": 3,
    "start_consumer": 3,
    "output_rotation": 3,
    "pause": 1,
}
CATCH_UP_S = 5.0  # how long a rotation waits for the producer to read what was written
HEAD_BYTES = 1024  # the producer's fingerprint: a digest of up to this many first bytes
HEAD_LONG = 1100  # a banner longer than that

# the programs' --batch-max-bytes: only a line longer than that is shipped in pieces
PIECE_BYTES = 4096

PRODUCER_ARGS = (
    "--rotation-grace",
    "0.3",
    "--checkpoint-interval",
    "0.05",
    "--batch-max-bytes",
    str(PIECE_BYTES),
    "--shutdown-timeout",
    "10",
)
CONSUMER_ARGS = ("--prefetch", "4")


def loss_mode() -> str:
    """`suffix` or `reported`, from LOGSHIP_MODEL_LOSS (auto: whether the producer logs
    bytes_lost at all)."""
    mode = os.environ.get("LOGSHIP_MODEL_LOSS", "auto")
    if mode != "auto":
        return mode
    sources = "".join(p.read_text() for p in (REPO / "producer").glob("*.py"))
    return "reported" if '"bytes_lost"' in sources else "suffix"


@dataclass
class Generation:
    """One file's content between its beginning (creation or truncation) and its end."""

    id: int
    data: bytearray = field(default_factory=bytearray)
    paths: set[str] = field(default_factory=set)
    # why its only copy went ("truncate", "rewrite", "delete", ...), and whether the producer was
    # up at that moment; None while it still exists somewhere
    lost_by: str | None = None
    producer_up_at_loss: bool = True
    # begun and ended while the producer was down, never looked at by it
    unseen: bool = False
    begun_in_outage: int = -1
    rewrite_of: int | None = None  # the generation an in-place rewrite replaced


@dataclass
class Verdict:
    seed: int
    ok: bool
    problems: list[str]
    summary: list[str]
    ops: list[str]
    expected_losses: list[str]
    notes: list[str]
    workdir: Path

    def report(self) -> str:
        head = f"seed {self.seed}: {'ok' if self.ok else 'FAILED'}  (workdir {self.workdir})"
        parts = [head, *self.summary]
        if self.problems:
            parts += ["problems:", *(f"  {p}" for p in self.problems)]
        if self.expected_losses:
            parts += ["expected (unpreventable) losses:", *(f"  {e}" for e in self.expected_losses)]
        if self.notes:
            parts += ["notes:", *(f"  {n}" for n in self.notes)]
        parts += ["ops:", *(f"  {o}" for o in self.ops)]
        parts.append(f"replay: LOGSHIP_MODEL_SEED={self.seed} pytest -s tests/fault/test_model.py")
        return "\n".join(parts)


class Scenario:
    """One seeded run: the files, the programs and what was written where."""

    def __init__(
        self,
        seed: int,
        workdir: Path,
        topology: Topology,
        kinds: set[str],
        *,
        ops: int = 20,
        script: list[str] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.script = list(script or [])
        self.n_ops = len(self.script) if script else ops
        self.pipe = Pipeline(workdir, topology)
        self.dir = workdir
        self.gens: list[Generation] = []
        # file name in the workdir → the generation it holds
        self.files: dict[str, Generation] = {}
        self.pending: bytes | None = None  # the rest of a partially written line
        self.seq = 0
        self.oplog: list[str] = []
        self.t0 = time.monotonic()
        self.producer: Program | None = None
        self.consumer: Program | None = None
        self.state = {"producer": "down", "consumer": "down"}  # → starting → up → down
        self.log_at: dict[str, int] = {}  # where each program's log began at its last start
        self.outage = 0  # counts producer outages; 0 = none yet
        self.output_rotations = 0
        self.rotations_this_outage = 0

    # -- bookkeeping -------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.oplog.append(f"{time.monotonic() - self.t0:7.3f}s {text}")

    def path(self, name: str) -> Path:
        return self.dir / name

    def new_gen(self, name: str) -> Generation:
        gen = Generation(len(self.gens) + 1, paths={name})
        if not self.producer_ready():
            gen.begun_in_outage = self.outage
        self.gens.append(gen)
        self.files[name] = gen
        return gen

    def end_gen(self, gen: Generation, reason: str) -> None:
        """The last copy of `gen` is gone: its unread part is lost, unpreventably."""
        if not gen.data:
            return
        watching = self.producer_ready()
        gen.lost_by = reason
        gen.producer_up_at_loss = watching
        gen.unseen = not watching and gen.begun_in_outage == self.outage
        if "eager_rotation" in self.kinds and not gen.unseen:
            # rotations that do not wait for the producer: one stalled on a busy box is down as
            # far as rotation goes. Nothing of the file read (the producer saves a source's
            # first fingerprint before publishing any of it), it saw at most an empty file
            gen.unseen = not self.fingerprinted(gen)

    def fingerprinted(self, gen: Generation) -> bool:
        """Some source in the producer's checkpoint fingerprints the generation's first bytes."""
        try:
            sources = json.loads((self.dir / "producer.checkpoint").read_text())["sources"]
        except (OSError, ValueError, KeyError, TypeError):
            return True  # no evidence either way: judged as seen
        for entry in sources:
            length, sha = entry.get("head_len"), entry.get("head_sha")
            if (
                isinstance(length, int)
                and 0 < length <= len(gen.data)
                and hashlib.sha256(bytes(gen.data[:length])).hexdigest() == sha
            ):
                return True
        return False

    def line(self, gen: Generation) -> bytes:
        """A unique, self-describing line with bytes that test byte-exactness."""
        self.seq += 1
        rng = self.rng
        payload = bytearray()
        for _ in range(rng.randint(0, 60)):
            r = rng.random()
            if r < 0.04:
                payload += b"\x00"
            elif r < 0.08:
                payload += b"\xff"
            elif r < 0.11:
                payload += b"\r"
            else:
                payload.append(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 "))
        if rng.random() < 0.02:  # a line longer than a batch: split across messages
            payload += b"L" * rng.randint(4096, 9000)
        end = b"\r\n" if rng.random() < 0.2 else b"\n"
        return b"s%d g%d n%d " % (self.seed, gen.id, self.seq) + bytes(payload) + end

    def banner(self, gen: Generation) -> bytes:
        pad = HEAD_LONG if self.rng.random() < 0.5 else self.rng.randint(10, 80)
        return b"s%d g%d banner %s\n" % (self.seed, gen.id, b"=" * pad)

    def write(self, data: bytes, *, name: str = "input.txt") -> None:
        """Append as a writer that opens by path (`>>`): a missing file is created."""
        gen = self.files.get(name)
        if gen is None:
            gen = self.new_gen(name)
        with self.path(name).open("ab") as handle:
            handle.write(data)
        gen.data += data

    def finish_partial(self) -> None:
        if self.pending is not None:
            rest, self.pending = self.pending, None
            self.write(rest)
            self.log(f"finish partial line ({len(rest)} bytes)")

    # -- programs --------------------------------------------------------------------------------

    def _mark_log(self, name: str) -> None:
        log_path = self.dir / name
        self.log_at[name] = log_path.stat().st_size if log_path.exists() else 0

    def start_producer(self) -> None:
        self._mark_log("producer.log")
        self.producer = self.pipe.producer(*PRODUCER_ARGS)
        self.state["producer"] = "starting"
        self.log("start producer")

    def start_consumer(self) -> None:
        self._mark_log("consumer-output.txt.log")
        self.consumer = self.pipe.consumer(*CONSUMER_ARGS)
        self.state["consumer"] = "starting"
        self.log("start consumer")

    def producer_ready(self) -> bool:
        """Seen past its first look at the files (`producer_watching`) by an await op. The model
        decides from its own state, not from timing, so a seed always draws the same ops."""
        return self.state["producer"] == "up"

    def await_ready(self, name: str) -> None:
        program = self.producer if name == "producer" else self.consumer
        assert program is not None
        event = "producer_watching" if name == "producer" else "consumer_consuming"
        program.wait_for_event(event, 60, after=self.log_at[program.log_path.name])
        self.state[name] = "up"
        self.log(f"{name} ready")

    def stop(self, program: Program | None, how: str) -> None:
        assert program is not None
        if how == "kill":
            program.kill()
        else:
            code = program.terminate(30)
            if code != 0:
                raise AssertionError(f"{program.module} exited {code} on SIGTERM")
        self.state[program.module] = "down"
        self.log(f"{how} {program.module}")

    # -- the ops ---------------------------------------------------------------------------------

    def choices(self) -> dict[str, float]:
        """The ops possible now, with their weights."""
        k = self.kinds
        may_rotate = self.producer_ready() or ("outage_rotation" in k)
        pending_ok = self.pending is None or "split_partial" in k
        options: dict[str, float] = {"append": WEIGHTS["append"], "pause": WEIGHTS["pause"]}
        if "partial" in k:
            options["partial" if self.pending is None else "finish"] = WEIGHTS["partial"]
        wanted = []
        if self.producer_ready() or "outage_truncate" in k:
            wanted += ["truncate", "delete"]
        if may_rotate:
            if pending_ok:
                wanted += ["rename", "chain", "copytruncate", "copytruncate_fast"]
            wanted.append("rewrite")
        if "output_rotation" in k:
            wanted.append("output_rotation")
        options.update({kind: WEIGHTS[kind] for kind in wanted if kind in k})
        options.update(self._program_choices())
        return options

    def _program_choices(self) -> dict[str, float]:
        k = self.kinds
        options: dict[str, float] = {}
        # SIGKILL at any moment; SIGTERM only once the signal handlers are in (before that,
        # Python's default action ends the process with -15, which is no clean stop to judge)
        for name, state in self.state.items():
            if state == "down":
                options[f"start_{name}"] = WEIGHTS[f"start_{name}"]
                continue
            if state == "starting":
                options[f"await_{name}"] = WEIGHTS[f"start_{name}"]
            if f"kill_{name}" in k:
                options[f"kill_{name}"] = WEIGHTS[f"kill_{name}"]
            if f"term_{name}" in k and state == "up":
                options[f"term_{name}"] = WEIGHTS[f"term_{name}"]
        return options

    def step(self) -> None:
        if self.script:
            op = self.script.pop(0)  # a given sequence (a reduced failure), not a drawn one
        else:
            options = self.choices()
            names = sorted(options)
            op = self.rng.choices(names, [options[n] for n in names])[0]
        getattr(self, f"op_{op}")()

    def op_pause(self) -> None:
        pause = self.rng.uniform(0.1, 0.6)
        time.sleep(pause)
        self.log(f"pause {pause:.2f}s")

    def op_append(self) -> None:
        self.finish_partial()
        gen = self.files.get("input.txt") or self.new_gen("input.txt")
        lines = []
        if not gen.data and self.rng.random() < 0.5:
            lines.append(self.banner(gen))
        lines += [self.line(gen) for _ in range(self.rng.randint(1, 25))]
        # a writer writing a few lines at a time
        while lines:
            take = self.rng.randint(1, len(lines))
            self.write(b"".join(lines[:take]))
            lines = lines[take:]
        self.log(f"append lines up to n{self.seq} to g{gen.id} ({len(gen.data)} bytes)")

    def op_partial(self) -> None:
        self.finish_partial()
        gen = self.files.get("input.txt") or self.new_gen("input.txt")
        line = self.line(gen)
        cut = self.rng.randint(1, len(line) - 1)
        self.write(line[:cut])
        self.pending = line[cut:]
        self.log(f"partial line n{self.seq}: {cut} of {len(line)} bytes to g{gen.id}")

    def op_finish(self) -> None:
        self.finish_partial()

    def _unlink(self, name: str, why: str) -> None:
        gen = self.files.pop(name, None)
        if self.path(name).exists():
            self.path(name).unlink()
        if gen is not None:
            self.end_gen(gen, why)

    def _rename(self, old: str, new: str) -> None:
        if not self.path(old).exists():
            self.files.pop(old, None)
            return
        os.rename(self.path(old), self.path(new))
        gen = self.files.pop(old)
        gen.paths.add(new)
        self.files[new] = gen

    def _shift(self, depth: int) -> None:
        """logrotate with `rotate depth`: the oldest goes, the others move up by one."""
        self._unlink(f"input.txt.{depth}", f"deleted rotated input.txt.{depth}")
        for n in range(depth - 1, 0, -1):
            self._rename(f"input.txt.{n}", f"input.txt.{n + 1}")

    def _maybe_finish_before_rotation(self, *, eager: bool = False) -> str:
        """Finish a pending line (unless split_partial), and let a running producer catch up
        with the file first (unless eager): a rotation of bytes it has not seen is the same
        hazard as a rotation while it is down, which kinds eager_rotation and outage_rotation
        test. Returns a note for the op log."""
        if self.pending is not None and not (
            "split_partial" in self.kinds and self.rng.random() < 0.7
        ):
            self.finish_partial()
        if eager or "eager_rotation" in self.kinds or not self.producer_ready():
            return ""
        if wait_until(self.caught_up, CATCH_UP_S, 0.02):
            return ""
        return f" (producer still behind after {CATCH_UP_S:.0f}s)"

    def caught_up(self) -> bool:
        """The producer's checkpoint has the input confirmed up to its size: same inode and
        the same first bytes (an inode number is soon reused by a new file)."""
        try:
            with self.path("input.txt").open("rb") as handle:
                st = os.fstat(handle.fileno())
                head = handle.read(HEAD_BYTES)
        except FileNotFoundError:
            return True
        try:
            sources = json.loads((self.dir / "producer.checkpoint").read_text())["sources"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return any(isinstance(e, dict) and confirms(e, st, head) for e in sources)

    def _note_outage_rotation(self) -> str:
        if self.producer_ready():
            return ""
        self.rotations_this_outage += 1
        return f" (producer not watching: rotation {self.rotations_this_outage} of this outage)"

    def op_rename(self) -> None:
        behind = self._maybe_finish_before_rotation()
        self._unlink("input.txt.1", "deleted rotated input.txt.1")
        gen = self.files.get("input.txt")
        self._rename("input.txt", "input.txt.1")
        create = self.rng.random() < 0.7
        if create:
            self.path("input.txt").touch()
            self.new_gen("input.txt")
        note = self._note_outage_rotation() + behind
        self.log(
            f"rename input.txt (g{gen.id if gen else '-'}) → input.txt.1"
            f"{', create input.txt' if create else ''}{note}"
        )

    def op_chain(self) -> None:
        behind = self._maybe_finish_before_rotation()
        self._shift(3)
        gen = self.files.get("input.txt")
        self._rename("input.txt", "input.txt.1")
        self.path("input.txt").touch()
        self.new_gen("input.txt")
        note = self._note_outage_rotation() + behind
        self.log(f"chain .2→.3 .1→.2 input.txt (g{gen.id if gen else '-'})→.1, create{note}")

    def op_copytruncate_fast(self) -> None:
        self.op_copytruncate(eager=True)

    def op_copytruncate(self, *, eager: bool = False) -> None:
        if "input.txt" not in self.files:
            self.op_append()
        behind = self._maybe_finish_before_rotation(eager=eager)
        self._shift(3)
        gen = self.files["input.txt"]
        shutil.copyfile(self.path("input.txt"), self.path("input.txt.1"))
        self.files["input.txt.1"] = gen
        gen.paths.add("input.txt.1")
        os.truncate(self.path("input.txt"), 0)
        self.new_gen("input.txt")
        note = self._note_outage_rotation() + behind
        fast = "" if not eager else " at once"
        self.log(
            f"copytruncate{fast} input.txt (g{gen.id}, {len(gen.data)} bytes) → input.txt.1{note}"
        )

    def op_truncate(self) -> None:
        self.finish_partial()
        gen = self.files.get("input.txt")
        if gen is None:
            return self.op_append()
        os.truncate(self.path("input.txt"), 0)
        self.end_gen(gen, "truncate")
        self.new_gen("input.txt")
        up = "" if self.producer_ready() else " (producer not watching)"
        self.log(f"truncate input.txt (g{gen.id}, {len(gen.data)} bytes){up}")

    def op_rewrite(self) -> None:
        self.finish_partial()
        gen = self.files.get("input.txt")
        if gen is None or b"\n" not in gen.data:
            return self.op_append()
        first = bytes(gen.data[: gen.data.index(b"\n") + 1])
        if not first.startswith(b"s%d g" % self.seed):
            # the file begins with the rest of a line begun in the file before (split_partial):
            # a rewrite starting with that rest would make a line of its own that equals it,
            # and whichever arrives the judge cannot tell apart (seed 70007)
            return self.op_append()
        behind = self._maybe_finish_before_rotation()
        new = Generation(len(self.gens) + 1, paths={"input.txt"}, rewrite_of=gen.id)
        body = first + b"".join(self.line(new) for _ in range(self.rng.randint(1, 40)))
        with self.path("input.txt").open("wb") as handle:  # same inode, O_TRUNC
            handle.write(body)
        self.end_gen(gen, "rewrite")
        if not self.producer_ready():
            new.begun_in_outage = self.outage
        self.gens.append(new)
        self.files["input.txt"] = new
        new.data += body
        note = self._note_outage_rotation() + behind
        self.log(
            f"rewrite input.txt in place (g{gen.id}, {len(gen.data)} bytes → g{new.id}, "
            f"{len(body)} bytes, same {len(first)}-byte first line){note}"
        )

    def op_delete(self) -> None:
        self.finish_partial()
        gen = self.files.get("input.txt")
        self._unlink("input.txt", "delete")
        create = self.rng.random() < 0.5
        if create:
            self.path("input.txt").touch()
            self.new_gen("input.txt")
        up = "" if self.producer_ready() else " (producer not watching)"
        self.log(
            f"delete input.txt (g{gen.id if gen else '-'}){', re-create' if create else ''}{up}"
        )

    def op_kill_producer(self) -> None:
        self.stop(self.producer, "kill")
        self._producer_went_down()

    def op_term_producer(self) -> None:
        self.stop(self.producer, "term")
        self._producer_went_down()

    def _producer_went_down(self) -> None:
        self.outage += 1
        self.rotations_this_outage = 0

    def op_start_producer(self) -> None:
        self.start_producer()

    def op_await_producer(self) -> None:
        self.await_ready("producer")

    def op_await_consumer(self) -> None:
        self.await_ready("consumer")

    def op_kill_consumer(self) -> None:
        self.stop(self.consumer, "kill")

    def op_term_consumer(self) -> None:
        self.stop(self.consumer, "term")

    def op_start_consumer(self) -> None:
        self.start_consumer()

    def op_output_rotation(self) -> None:
        if not self.pipe.output.exists():
            return self.op_pause()
        self.output_rotations += 1
        target = self.dir / f"output.txt.{self.output_rotations}"
        os.rename(self.pipe.output, target)
        # SIGHUP only once its handler is in (before, it ends the process); a consumer still
        # starting, or down, finds the new file at its next write
        hup = self.state["consumer"] == "up"
        if hup and self.consumer is not None:
            self.consumer.signal(signal.SIGHUP)
        self.log(f"rename output.txt → {target.name}{', SIGHUP consumer' if hup else ''}")

    # -- running and judging -----------------------------------------------------------------------

    def run(self, *, settle_timeout: float = 60) -> Verdict:
        self.path("input.txt").touch()
        self.new_gen("input.txt")
        problems: list[str] = []
        try:
            self.start_consumer()
            self.start_producer()
            self.await_ready("consumer")
            self.await_ready("producer")
            for _ in range(self.n_ops):
                scripted = bool(self.script)
                self.step()
                self.pipe.assert_alive()
                if not scripted:  # a script says its pauses itself
                    time.sleep(self.rng.uniform(0, 0.15))
            problems += self.settle(settle_timeout)
        except (AssertionError, subprocess.TimeoutExpired) as error:
            # a program died: what follows (missing lines, its exit code) is its consequence
            problems.append(f"program failure: {str(error)[:3000]}")
            self.pipe.stop_all()
            problems += self.scan_logs()
            summary = ["a program failed: the output was not judged"]
            return Verdict(self.seed, False, problems, summary, self.oplog, [], [], self.dir)
        self.pipe.stop_all()
        for program in self.pipe.programs:
            code = program.proc.returncode if program.proc is not None else None
            if code not in (0, -9, None):
                problems.append(f"{program.module} exited {code}")
        problems += self.scan_logs()
        return self.judge(problems)

    def settle(self, timeout: float) -> list[str]:
        """Bring both programs up, end with a marker line, wait for it in the output."""
        self.finish_partial()
        for name in ("producer", "consumer"):
            if self.state[name] == "down":
                getattr(self, f"op_start_{name}")()
        for name in ("producer", "consumer"):
            if self.state[name] == "starting":
                self.await_ready(name)
        marker = b"s%d END\n" % self.seed
        self.write(marker)
        self.log("append END marker, wait for it in output.txt")
        arrived = wait_until(
            lambda: self.pipe.output.exists() and self.pipe.output.read_bytes().endswith(marker),
            timeout,
            0.1,
        )
        if not arrived:
            self.pipe.assert_alive()
            return [f"END marker not in output.txt after {timeout:.0f}s"]
        time.sleep(0.6)  # anything late (a duplicate, a rotated file's end) would land now
        self.log("END marker arrived")
        return []

    def outputs(self) -> bytes:
        names = [f"output.txt.{n}" for n in range(1, self.output_rotations + 1)] + ["output.txt"]
        return b"".join(
            (self.dir / name).read_bytes() for name in names if (self.dir / name).exists()
        )

    def lost_events(self) -> list[dict[str, object]]:
        log_path = self.dir / "producer.log"
        events = []
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for raw in text.splitlines():
            if '"bytes_lost"' not in raw:
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if entry.get("event") == "bytes_lost":
                events.append(entry)
        return events

    def scan_logs(self) -> list[str]:
        problems = []
        for log_path in sorted(self.dir.glob("*.log")):
            text = log_path.read_text(errors="replace")
            if "Traceback" in text:
                at = text.index("Traceback")
                problems.append(f"traceback in {log_path.name}: {text[at : at + 600]!r}")
        return problems

    def judge(self, problems: list[str]) -> Verdict:
        found = assess(self.gens, self.outputs(), self.lost_events(), loss_mode())
        return Verdict(
            self.seed,
            not (problems or found.problems),
            problems + found.problems,
            found.summary,
            self.oplog,
            found.expected_losses,
            found.notes,
            self.dir,
        )


@dataclass
class Assessment:
    problems: list[str]
    summary: list[str]
    expected_losses: list[str]
    notes: list[str]


def assess(
    gens: list[Generation], output: bytes, events: list[dict[str, object]], mode: str
) -> Assessment:
    """The oracle: what was written (`gens`) against what arrived (`output`)."""
    expected, owner = expected_lines(gens)
    got = cut_lines(output)
    match = align(expected, got)
    glued, own_losses = glued_lines(gens, match, expected, owner)
    match.unknown = torn_lines(gens, match, expected, owner)
    judged = LossJudge(gens, expected, owner, events, mode)
    for gen_id, indices in sorted(judged.shared_prefixes(match.missing_by_gen(owner)).items()):
        judged.missing(gen_id, indices)
    for gen, lost_bytes, line in own_losses:
        judged.rest_lost(gen, lost_bytes, line)
    problems = list(judged.problems)
    for label, items in (
        ("duplicate", match.duplicates),
        ("out of order", match.reordered),
        ("never written to the input", match.unknown),
    ):
        if items:
            first_at, first_line = items[0]
            problems.append(
                f"{len(items)} output lines {label}; first at output line {first_at + 1}: "
                f"{first_line[:80]!r}"
            )
    summary = [
        f"mode {mode}; generations {len(gens)}; lines expected {len(expected)}, "
        f"output {len(got)}, missing {len(match.missing)}, duplicates {len(match.duplicates)}, "
        f"out of order {len(match.reordered)}, unknown {len(match.unknown)}; "
        f"bytes_lost events {len(events)}",
        first_difference(expected, got),
    ]
    notes = glued + judged.notes + judged.unmatched_events()
    return Assessment(problems, summary, judged.expected_losses, notes)


def glued_lines(
    gens: list[Generation], match: Match, expected: list[bytes], owner: list[int]
) -> tuple[list[str], list[tuple[Generation, int, bytes]]]:
    """A line begun in one file and finished in the next whose second part was lost with the
    next file: its first part, the unterminated end of the old file, is shipped as it is (the
    README's wire format) and the next line shipped runs on from it. Both lines arrived, as far
    as anyone could deliver them: neither is missing, and the joined line is no stranger. So
    too a file's last line, longer than a batch, of which the first pieces were shipped before
    the file was cut or rewritten (seed 540003108): its rest was lost with its own file, a loss
    that must still be reported; those are returned as (generation, bytes lost, the line). The
    line run on into may itself be torn, its first part lost with its own file (seed
    630012345): that line stays missing, judged with its file's losses."""
    missing = set(match.missing)

    def torn(j: int, after: bytes) -> bool:
        return (
            len(expected[j]) > len(after)
            and expected[j].endswith(after)
            and gens[owner[j] - 1].lost_by is not None
        )

    notes, left = [], []
    own_losses: list[tuple[Generation, int, bytes]] = []
    for at, line in match.unknown:
        # a rest lost with the next file first, over every candidate line; only then the
        # pieces of a long line (seed 550004108: a 6-byte half line, lost with the next file,
        # was taken for the first bytes of another file's last line, which begins alike)
        found = _glued(
            missing, expected, line, lambda whole, rest: _lost_with_next(gens, rest), torn
        )
        if found is None:
            found = _glued(
                missing,
                expected,
                line,
                lambda whole, rest: _pieces_shipped(gens, whole, rest),
                torn,
            )
            if found is not None:
                whole = expected[found[0]]
                own = _pieces_shipped(gens, whole, whole[found[2] :])
                assert own is not None
                if own.data.endswith(whole):
                    own_losses.append((own, len(whole) - found[2], whole))
                else:  # lost from the cut to the generation's end (no overhang to count)
                    cut = _line_at(bytes(own.data), whole) + found[2]
                    own_losses.append((own, len(own.data) - cut, b""))
        if found is None:
            left.append((at, line))
            continue
        missing -= {found[0]} if found[3] else set(found[:2])
        into = "the second part of " if found[3] else ""
        notes.append(
            f"output line {at + 1}: the first part of {expected[found[0]][:40]!r} (its rest "
            f"lost with the next file) runs on into {into}{expected[found[1]][:40]!r}"
        )
    match.unknown = left
    match.missing = [i for i in match.missing if i in missing]
    return notes, own_losses


def _glued(
    missing: set[int],
    expected: list[bytes],
    line: bytes,
    lost: Callable[[bytes, bytes], object],
    torn: Callable[[int, bytes], bool],
) -> tuple[int, int, int, bool] | None:
    """(the line cut, the line it runs on into, where the cut is, whether only that line's
    second part follows: `torn`), for the first missing line whose first part, followed by
    another missing line (or the second part of one), is `line`, and whose rest `lost`."""
    for i in sorted(missing):
        whole = expected[i]
        common = 0
        while common < min(len(whole), len(line)) and whole[common] == line[common]:
            common += 1
        # the cut is at or before the common prefix's end: the next line may begin with the
        # very bytes the lost rest began with (seed 520001145: both go on with "s<seed> ")
        for k in range(min(common, len(whole) - 1), 0, -1):
            rest, after = whole[k:], line[k:]
            j = next((j for j in missing if j != i and expected[j] == after), None)
            if j is not None and lost(whole, rest):
                return i, j, k, False
            j = next((j for j in missing if j != i and torn(j, after)), None)
            if j is not None and lost(whole, rest):
                return i, j, k, True
    return None


def _lost_with_next(gens: list[Generation], rest: bytes) -> bool:
    return any(g.lost_by is not None and g.data.startswith(rest) for g in gens)


def _line_at(data: bytes, line: bytes) -> int:
    """Where `line` begins as a whole line of `data`."""
    at = 0
    for piece in cut_lines(data):
        if piece == line:
            return at
        at += len(piece)
    raise ValueError("not a line of it")


def _pieces_shipped(gens: list[Generation], whole: bytes, rest: bytes) -> Generation | None:
    """The lost generation `whole` is a line of, when what arrived of it is whole pieces: its
    last line, or any line when the producer was behind (seed 630012405: the lines after it
    were lost with it, by the same cut)."""
    shipped = len(whole) - len(rest)
    if shipped < PIECE_BYTES:
        return None
    return next(
        (g for g in gens if g.lost_by is not None and whole in cut_lines(bytes(g.data))), None
    )


def torn_lines(
    gens: list[Generation], match: Match, expected: list[bytes], owner: list[int]
) -> list[tuple[int, bytes]]:
    """A line begun in one file and finished in the next (a rotation between the two writes)
    whose first part was lost with the old file arrives as its second part alone: the line
    counts as missing (judged with the old file's losses), the part is no stranger."""
    missing = set(match.missing)
    left = []
    for at, line in match.unknown:
        torn = any(
            i in missing
            and len(expected[i]) > len(line)
            and expected[i].endswith(line)
            and gens[owner[i] - 1].lost_by is not None
            for i in match.missing
        )
        if not torn:
            left.append((at, line))
    return left


class LossJudge:
    """Decides, generation by generation, whether missing lines were a loss nobody could prevent
    (and, in `reported` mode, whether the producer said so)."""

    def __init__(
        self,
        gens: list[Generation],
        expected: list[bytes],
        owner: list[int],
        events: list[dict[str, object]],
        mode: str,
    ) -> None:
        self.gens = gens
        self.expected = expected
        self.owner = owner
        self.events = events
        self.mode = mode
        self.used: dict[int, int] = {}  # event index → the generation it was taken for
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.expected_losses: list[str] = []
        self.unknowable: set[int] = set()

    def lines_of(self, gen_id: int) -> list[int]:
        return [i for i, o in enumerate(self.owner) if o == gen_id]

    def shared_prefixes(self, missing: dict[int, list[int]]) -> dict[int, list[int]]:
        """A rewrite whose new content starts with every line the producer had read of the old
        one looks, byte for byte, like the old file grown: those lines are shipped once, as the
        old file's, and the old file's unread rest is gone without anyone being able to tell.
        What the rewrite lost later (a suffix, seed 501464445) is judged as any loss."""
        for gen in self.gens:
            gone = missing.get(gen.id, [])
            if gen.rewrite_of is None or not gone:
                continue
            mine = self.lines_of(gen.id)
            leading = 0
            while leading < min(len(gone), len(mine)) and gone[leading] == mine[leading]:
                leading += 1
            for k in range(leading, 0, -1):
                if self._shared_with_ancestor(gen, k, missing):
                    if gone[k:]:
                        missing[gen.id] = gone[k:]
                    else:
                        del missing[gen.id]
                    break
        return missing

    def _shared_with_ancestor(self, gen: Generation, k: int, missing: dict[int, list[int]]) -> bool:
        """Whether the first k lines of `gen` equal all that was read of the generation it
        rewrote (rewritten several times while nobody looked, each keeping those lines: what was
        read is that of the nearest one any of whose lines arrived)."""
        mine = self.lines_of(gen.id)
        ancestor: int | None = gen.rewrite_of
        while ancestor is not None:
            old = self.lines_of(ancestor)
            old_gone = missing.get(ancestor, [])
            same = len(old) >= k and all(
                self.expected[a] == self.expected[b] for a, b in zip(mine[:k], old[:k], strict=True)
            )
            if not same:
                return False
            if old_gone == old[k:]:
                self.unknowable.add(ancestor)
                self.notes.append(
                    f"g{gen.id}: its first {k} lines equal what was read of g{ancestor}: "
                    "shipped once, as the old file's"
                )
                return True
            if old_gone != old:
                return False
            ancestor = self.gens[ancestor - 1].rewrite_of
        return False

    def missing(self, gen_id: int, indices: list[int]) -> None:
        gen = self.gens[gen_id - 1]
        mine = self.lines_of(gen_id)
        suffix = indices == mine[len(mine) - len(indices) :]
        first = self.expected[indices[0]][:60]
        lost_bytes = sum(len(self.expected[i]) for i in indices)
        where = (
            f"g{gen_id} ({'/'.join(sorted(gen.paths))}): {len(indices)} of {len(mine)} lines, "
            f"{lost_bytes} bytes, from {first!r}"
        )
        if gen.lost_by is None:
            self.problems.append(f"lost {where}; nothing could have lost it")
            return
        state = "watching" if gen.producer_up_at_loss else "not watching"
        why = f"{gen.lost_by} with the producer {state}"
        if not suffix:
            self.problems.append(f"lost {where}: not a suffix of its file ({why})")
            return
        exempt = gen.unseen or gen_id in self.unknowable or self.looks_grown(gen)
        if (
            self.mode == "reported"
            and not exempt
            and not self.reported(gen, lost_bytes, self.expected[indices[-1]])
        ):
            self.problems.append(f"lost {where} ({why}) and not reported as bytes_lost")
            return
        self.expected_losses.append(f"{where} ({why}{', never seen' if gen.unseen else ''})")

    def rest_lost(self, gen: Generation, lost_bytes: int, line: bytes) -> None:
        """The rest of the generation's last line, whose first pieces were shipped, went with
        the generation: reported like any loss, from where the shipped pieces end."""
        # (the report may be the one that covers the lines after it: the same cut)
        if (
            gen.unseen
            or self.mode != "reported"
            or self.reported(gen, lost_bytes, line, reuse=True)
        ):
            return
        self.problems.append(
            f"lost the last {lost_bytes} bytes of g{gen.id}'s last line {line[:40]!r} "
            f"({gen.lost_by}) and not reported as bytes_lost"
        )

    def looks_grown(self, gen: Generation) -> bool:
        """The README's first limit (seed 501464203): a file that held only a half line when the
        producer went down is known by those bytes alone; cut while it was down and refilled with
        lines that begin with the same bytes (every model line begins with "s<seed> g"), it looks,
        byte for byte, like the old file grown. Its loss cannot be told, so it cannot be reported.
        A copy that still existed at restart must still be shipped: only the report is exempt."""
        head = bytes(gen.data)
        return (
            not gen.producer_up_at_loss
            and bool(head)
            and b"\n" not in head
            and any(later.id > gen.id and later.data.startswith(head) for later in self.gens)
        )

    @staticmethod
    def overhang(gen: Generation, line: bytes) -> int:
        """How many bytes of `line`, the last of the generation's lines, were written after the
        generation ended (to the next file): the part of it the file never held."""
        held = len(line)
        while held and not gen.data.endswith(line[:held]):
            held -= 1
        return len(line) - held

    def reported(
        self, gen: Generation, lost_bytes: int, last_line: bytes = b"", *, reuse: bool = False
    ) -> bool:
        # the producer reports from its confirmed offset, which may lag behind what reached
        # the output (re-sent bytes are skipped by the consumer): start at or before the gap.
        # A last line split by a rotation (split_partial) holds only its first part here
        stop = len(gen.data) - lost_bytes + self.overhang(gen, last_line)
        for n, event in enumerate(self.events):
            path = os.path.basename(str(event.get("path", "")))
            start = event.get("start")
            taken = self.used.get(n)
            if (taken is not None and not (reuse and taken == gen.id)) or path not in gen.paths:
                continue
            if not isinstance(start, int):
                continue
            if start > stop:
                continue
            self.used[n] = gen.id
            if event.get("bytes") != lost_bytes:
                self.notes.append(
                    f"g{gen.id}: bytes_lost says {event.get('bytes')}, {lost_bytes} missing"
                )
            return True
        return False

    def unmatched_events(self) -> list[str]:
        if self.mode != "reported":
            return []
        return [
            f"bytes_lost with no missing bytes matched: {e}"
            for n, e in enumerate(self.events)
            if n not in self.used
        ]


def first_difference(expected: list[bytes], got: list[bytes]) -> str:
    for at, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return f"first difference at line {at + 1}: expected {want[:70]!r}, got {have[:70]!r}"
    if len(expected) != len(got):
        return f"identical for {min(len(expected), len(got))} lines, then lengths differ"
    return "output identical to the input"


def confirms(entry: dict[str, object], st: os.stat_result, head: bytes) -> bool:
    """A checkpoint entry that is this file, read and confirmed to its end."""
    offset = entry.get("offset")
    if entry.get("ino") != st.st_ino or entry.get("finished") or not isinstance(offset, int):
        return False
    if offset < st.st_size:
        return False
    sha, length = entry.get("head_sha"), entry.get("head_len")
    if not isinstance(sha, str) or not isinstance(length, int):
        return True  # a checkpoint format without that fingerprint: the inode must do
    widened = length >= min(st.st_size, HEAD_BYTES)
    return widened and hashlib.sha256(head[:length]).hexdigest() == sha


def cut_lines(data: bytes) -> list[bytes]:
    """Lines ending in b"\n" (a lone \r is data, not a line end), the last maybe unterminated."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def expected_lines(gens: list[Generation]) -> tuple[list[bytes], list[int]]:
    """The concatenation of every generation, cut into lines; each line's generation (where its
    first byte was written: a line split across a rotation starts in the old file)."""
    lines: list[bytes] = []
    owner: list[int] = []
    carry = b""
    carry_owner = 0
    for gen in gens:
        chunks = cut_lines(bytes(gen.data))
        for chunk in chunks:
            if carry:
                chunk, carry, first_owner = carry + chunk, b"", carry_owner
            else:
                first_owner = gen.id
            if chunk.endswith(b"\n"):
                lines.append(chunk)
                owner.append(first_owner)
            else:
                carry, carry_owner = chunk, first_owner
    if carry:
        lines.append(carry)
        owner.append(carry_owner)
    return lines, owner


@dataclass
class Match:
    missing: list[int]
    duplicates: list[tuple[int, bytes]]
    reordered: list[tuple[int, bytes]]
    unknown: list[tuple[int, bytes]]

    def missing_by_gen(self, owner: list[int]) -> dict[int, list[int]]:
        grouped: dict[int, list[int]] = {}
        for index in self.missing:
            grouped.setdefault(owner[index], []).append(index)
        return grouped


def align(expected: list[bytes], got: list[bytes]) -> Match:
    """Walk the output against the expected lines: each output line takes the next unmatched
    expected line equal to it; one that only matches earlier is out of order (or a duplicate if
    every earlier equal line is taken)."""
    where: dict[bytes, list[int]] = {}
    for index, line in enumerate(expected):
        where.setdefault(line, []).append(index)
    taken = [False] * len(expected)
    pointer = 0
    duplicates, reordered, unknown = [], [], []
    for at, line in enumerate(got):
        candidates = where.get(line)
        if not candidates:
            unknown.append((at, line))
            continue
        ahead = next((i for i in candidates if i >= pointer and not taken[i]), None)
        if ahead is not None:
            taken[ahead] = True
            pointer = ahead + 1
            continue
        behind = next((i for i in candidates if not taken[i]), None)
        if behind is None:
            duplicates.append((at, line))
        else:
            taken[behind] = True
            reordered.append((at, line))
    missing = [i for i, t in enumerate(taken) if not t]
    return Match(missing, duplicates, reordered, unknown)


def parse_kinds(text: str | None, default: tuple[str, ...]) -> set[str]:
    """LOGSHIP_MODEL_OPS: `all`, a comma list, or `+kind,-kind` changes to the default."""
    if not text:
        return set(default)
    if text.strip() == "all":
        return set(KINDS)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if all(t[0] in "+-" for t in items):
        chosen = set(default)
        for t in items:
            (chosen.add if t[0] == "+" else chosen.discard)(t[1:])
    else:
        chosen = set(items)
    unknown = chosen - set(KINDS)
    if unknown:
        raise ValueError(f"LOGSHIP_MODEL_OPS: unknown op kinds {sorted(unknown)}; known: {KINDS}")
    return chosen


def summarise(verdicts: list[Verdict]) -> str:
    """One line per failed seed, plus the expected losses by cause."""
    causes: Counter[str] = Counter()
    for v in verdicts:
        for loss in v.expected_losses:
            causes[loss.rsplit("(", 1)[-1].rstrip(")")] += 1
    failed = [v.seed for v in verdicts if not v.ok]
    lines = [f"model: {len(verdicts)} scenarios, {len(failed)} failed: {failed}"]
    if causes:
        lines.append(
            "expected losses by cause: " + ", ".join(f"{c}: {n}" for c, n in causes.items())
        )
    return "\n".join(lines)
