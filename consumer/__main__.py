"""`python -m consumer` and `python -m consumer replay-dead`: read settings, set up logs, run."""

from __future__ import annotations

import sys

from logship.lifecycle import EarlySignals

if __name__ == "__main__":
    # `python -m consumer`: the imports below take ~0.4 s; a stop signal meanwhile is honoured as a
    # graceful stop once the program runs, not a death by SIGTERM
    EARLY: EarlySignals | None = EarlySignals.catch()

from consumer.metrics import ConsumerMetrics
from consumer.settings import ConsumerSettings
from consumer.sink import StateError
from logship import lenient_decode
from logship.amqp import FatalConnectError, TopologyError
from logship.cli import describe_os_error, describe_unknown_command, named
from logship.config import fail, load_settings
from logship.lifecycle import install_reopen_signal, install_stop_signals, run
from logship.logs import setup_logging
from logship.telemetry import TelemetryError

EPILOG = """\
commands:
  (none)         consume the queue and append to --output (the options above)
  replay-dead    move dead letters back to the exchange once their cause is fixed:
                 logship-consumer replay-dead --help
  rebuild        append what the archive holds to an output, exactly once (--follow: keep
                 following it as a second sink): logship-consumer rebuild --help

examples:
  logship-consumer --output /data/output.txt --amqp.url amqps://writer@broker:5671/
  LOGSHIP_AMQP__PASSWORD=s3cret logship-consumer --exit-when-idle 30   # drain, then exit 0

exit codes: 0 stopped or idle (--exit-when-idle), 1 crashed (logged as crashed), 2 wrong
setting or refused by the broker at start, 130 forced by a second stop signal."""

REPLAY_EPILOG = """\
examples:
  logship-consumer replay-dead --dry-run    # list what would move
  logship-consumer replay-dead --limit 10   # move the first 10 back

exit codes: 0 done, 1 the exchange did not take a copy (nothing lost: it stays dead-lettered),
2 wrong setting or refused by the broker."""

REBUILD_EPILOG = """\
examples:
  logship-consumer rebuild --output restored.txt                  # all the archive holds
  logship-consumer rebuild --output out.txt --since 2026-12-01T00:00Z --until 2026-12-02T00:00Z
  logship-consumer rebuild --output audit.txt --follow --http.port 9103   # a second sink

Rebuilding into an existing output adds only what it lacks; run it again after a stop or a kill
and it resumes (the stream offset is kept in <output>.state). Stop the consumer writing to the
same output first.

exit codes: 0 done (or a --follow sink stopped), 1 stopped before the end (run it again to
resume), 2 wrong setting or refused by the broker, 3 done, but the archive no longer holds part
of what was asked (said on stderr: from when it can rebuild, and the bytes of each source)."""


def main(argv: list[str] | None = None, *, early: EarlySignals | None = None) -> int:
    early = early or EarlySignals.catch()
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "replay-dead":
        early.release()  # replay-dead stops on the first signal, as a one-shot command does
        return replay_main(args[1:])
    if args and args[0] == "rebuild":
        return rebuild_main(args[1:], early)
    if args and not args[0].startswith("-"):  # the only word that may come first is a command
        fail(describe_unknown_command(args[0], ["replay-dead", "rebuild"], "logship-consumer"))
    settings = load_settings(
        ConsumerSettings, args, EPILOG, "%(prog)s [replay-dead|rebuild] [options]"
    )
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()  # a delivery that does not decode must not close the connection
    from consumer.app import ConsumerApp

    async def serve() -> int:
        app = ConsumerApp(settings, ConsumerMetrics())
        install_reopen_signal(app.reopen_output)
        return await app.run(early)

    try:
        return run(serve)
    except StateError as error:
        fail(f"{named('output')}: {error}")
    except (FatalConnectError, TopologyError, TelemetryError) as error:
        fail(str(error))
    except OSError as error:  # a file a setting names, not usable after all
        fail(describe_os_error(error, {"output": [settings.output]}))


def replay_main(args: list[str]) -> int:
    from consumer.replay import ReplaySettings, replay

    settings = load_settings(ReplaySettings, args, REPLAY_EPILOG)
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()
    return run(lambda: replay(settings))


def rebuild_main(args: list[str], early: EarlySignals) -> int:
    from consumer.rebuild import Rebuild
    from consumer.rebuild_metrics import RebuildMetrics
    from consumer.rebuild_settings import RebuildSettings

    settings = load_settings(RebuildSettings, args, REBUILD_EPILOG)
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()

    async def serve() -> int:
        rebuild = Rebuild(settings, RebuildMetrics())
        install_stop_signals(rebuild.stop, early)
        return await rebuild.run()

    try:
        return run(serve)
    except StateError as error:
        fail(f"{named('output')}: {error}")
    except (FatalConnectError, TopologyError, TelemetryError) as error:
        fail(str(error))
    except OSError as error:  # a file a setting names, not usable after all
        fail(describe_os_error(error, {"output": [settings.output]}))


if __name__ == "__main__":
    sys.exit(main(early=EARLY))
