"""`python -m consumer` and `python -m consumer replay-dead`: read settings, set up logs, run."""

from __future__ import annotations

import sys

from consumer.metrics import ConsumerMetrics
from consumer.settings import ConsumerSettings
from consumer.sink import StateError
from logship import lenient_decode
from logship.amqp import FatalConnectError, TopologyError
from logship.config import fail, load_settings
from logship.lifecycle import install_reopen_signal, install_stop_signals, run
from logship.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "replay-dead":
        return replay_main(args[1:])
    settings = load_settings(ConsumerSettings, args)
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()  # a delivery that does not decode must not close the connection
    from consumer.app import ConsumerApp

    async def serve() -> int:
        app = ConsumerApp(settings, ConsumerMetrics())
        install_stop_signals(app.stop)
        install_reopen_signal(app.reopen_output)
        return await app.run()

    try:
        return run(serve)
    except (StateError, FatalConnectError, TopologyError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))


def replay_main(args: list[str]) -> int:
    from consumer.replay import ReplaySettings, replay

    settings = load_settings(ReplaySettings, args)
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()
    return run(lambda: replay(settings))


if __name__ == "__main__":
    sys.exit(main())
