"""`logship status` (also `python -m ops status`): read settings, gather, show; once or --watch."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from logship.cli import describe_unknown_command
from logship.config import fail, load_settings
from ops.gather import StatusError, gather
from ops.model import Status
from ops.render import to_json, to_plain, to_rich
from ops.settings import DEFAULT_WATCH_S, StatusSettings

USAGE = """usage: logship COMMAND [options]

commands:
  status    is it working, how far behind, where: offsets and lag per input file, the output,
            the queue and the dead letters (`logship status --help`)

The programs themselves are logship-producer and logship-consumer.
"""


def _is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


def with_watch_default(args: list[str]) -> list[str]:
    """`--watch` may come without SECONDS: give it the default, so the flag parser sees a value
    (a number that follows, even a wrong one like -1, is its value and checked as such)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--watch" and not _is_number(following):
            out.append(f"{DEFAULT_WATCH_S:g}")
    return out


def quiet_libraries() -> None:
    """The status shows broker failures itself; the AMQP client's own log lines would only
    repeat them on stderr."""
    logging.getLogger().addHandler(logging.NullHandler())
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def shower(settings: StatusSettings, console: Console) -> Callable[[Status], None]:
    """How one status is shown: JSON (one line each), a rich screen, or plain text."""
    if settings.json_output:
        return lambda status: print(to_json(status), flush=True)
    if console.is_terminal:
        return lambda status: console.print(to_rich(status))
    return lambda status: print(to_plain(status), end="", flush=True)


async def run(settings: StatusSettings) -> int:
    console = Console()
    show = shower(settings, console)
    if settings.watch is None:
        show(await gather(settings))
        return 0
    if settings.json_output or not console.is_terminal:
        while True:
            show(await gather(settings))
            if not settings.json_output:
                print(flush=True)
            await asyncio.sleep(settings.watch)
    with Live(to_rich(await gather(settings)), console=console, auto_refresh=False) as live:
        while True:
            await asyncio.sleep(settings.watch)
            live.update(to_rich(await gather(settings)), refresh=True)


def status_main(args: list[str]) -> int:
    settings = load_settings(StatusSettings, with_watch_default(args))
    quiet_libraries()
    try:
        return asyncio.run(run(settings))
    except StatusError as error:
        fail(str(error))
    except KeyboardInterrupt:
        return 0  # the way out of --watch


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "status":
        return status_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if not args:
        print(USAGE, end="", file=sys.stderr)
        return 2
    fail(describe_unknown_command(args[0], ["status"], "logship"))


if __name__ == "__main__":
    sys.exit(main())
