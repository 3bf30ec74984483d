"""Showing a status: a rich screen at a terminal, aligned plain text otherwise, JSON for scripts."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ops.model import BrokerStatus, OutputStatus, QueueStatus, SourceStatus, Status

COLUMNS = ("PATH", "SIZE", "READ", "CONFIRMED", "WRITTEN", "LAG_BYTES", "LAG_S")


def to_json(status: Status) -> str:
    return json.dumps(asdict(status), separators=(",", ":"))


def _count(n: int | None, thing: str) -> str:
    return f"{_n(n)} {thing}{'' if n == 1 else 's'}"


def _n(value: int | float | None) -> str:
    return "-" if value is None else str(value)


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _source_row(s: SourceStatus) -> list[str]:
    path = s.path + (" (finished)" if s.finished else "") + ("" if s.exists else " (gone)")
    return [
        path,
        _n(s.size),
        _n(s.read),
        _n(s.confirmed),
        _n(s.written),
        _n(s.lag_bytes),
        _n(s.lag_seconds),
    ]


def _queue_text(q: QueueStatus | None, what: str) -> str:
    if q is None:
        return f"{what}: unknown"
    if q.error is not None:
        return f"{what} '{q.name}': {q.error}"
    if what == "queue":
        return f"queue '{q.name}': {q.messages} ready, {_count(q.consumers, 'consumer')}"
    return f"dead letters '{q.name}': {q.messages}"


def _broker_text(b: BrokerStatus) -> str:
    if not b.connected:
        return f"{b.url}  not connected: {b.error}"
    return f"{b.url}  {_queue_text(b.queue, 'queue')}; {_queue_text(b.dead_letters, 'dead')}"


def _output_text(o: OutputStatus) -> str:
    size = f"size {o.size}" if o.exists else "missing"
    recorded = "no state file" if o.recorded is None else f"recorded {o.recorded}"
    paths = sorted({s.path or s.id for s in o.sources})
    sources = _count(len(o.sources), "source") + (f" ({', '.join(paths)})" if paths else "")
    last = "" if o.last_write_age_s is None else f", last write {o.last_write_age_s} s ago"
    return f"{o.path}  {size}, {recorded}, {sources}{last}"


def _hidden(status: Status) -> str | None:
    if not status.hidden_sources:
        return None
    files = _count(status.hidden_sources, "finished file")
    return f"{files} fully written, not listed (--all lists them)"


def _checkpoint_note(status: Status) -> str | None:
    if status.checkpoint_exists:
        return None
    return "(no checkpoint yet: the producer has not started with this --checkpoint)"


def to_plain(status: Status) -> str:
    """Whitespace-aligned text, for pipes, logs and grep."""
    rows = [list(COLUMNS), *(_source_row(s) for s in status.sources)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        f"logship status at {_stamp(status.time)}",
        f"producer    {status.producer.url or '-'}  {status.producer.state}",
        f"consumer    {status.consumer.url or '-'}  {status.consumer.state}",
        f"broker      {_broker_text(status.broker)}",
        f"output      {_output_text(status.output)}",
        "",
        f"inputs (checkpoint {status.checkpoint})",
    ]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    lines += [note for note in (_hidden(status), _checkpoint_note(status)) if note]
    return "\n".join(lines) + "\n"


def _state_style(state: str) -> str:
    return {"ready": "green", "not asked": "dim"}.get(state, "red")


def to_rich(status: Status) -> RenderableType:
    """The same facts as `to_plain`, as a terminal screen with colour where attention is due."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for name, process in (("producer", status.producer), ("consumer", status.consumer)):
        head.add_row(
            name,
            Text.assemble(
                (process.url or "-", "dim"), "  ", (process.state, _state_style(process.state))
            ),
        )
    broker = _broker_text(status.broker)
    head.add_row("broker", Text(broker, style="" if status.broker.connected else "red"))
    head.add_row("output", _output_text(status.output))
    inputs = Table(title=f"inputs (checkpoint {status.checkpoint})", title_justify="left")
    for i, name in enumerate(COLUMNS):
        if i == 0:
            inputs.add_column(name, overflow="fold")
        else:
            inputs.add_column(name, justify="right", no_wrap=True)
    for s in status.sources:
        style = "yellow" if s.lag_bytes else ""
        inputs.add_row(*_source_row(s), style=style)
    notes = [Text(n, style="dim") for n in (_hidden(status), _checkpoint_note(status)) if n]
    title = Text(f"logship status at {_stamp(status.time)}", style="bold")
    return Group(title, head, inputs, *notes)
