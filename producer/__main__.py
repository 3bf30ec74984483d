"""`python -m producer`: read settings, set up logging, run the producer until stopped."""

from __future__ import annotations

import sys

from logship.lifecycle import EarlySignals

if __name__ == "__main__":
    # `python -m producer`: the imports below take ~0.4 s; a stop signal meanwhile is honoured as a
    # graceful stop once the program runs, not a death by SIGTERM
    EARLY: EarlySignals | None = EarlySignals.catch()

from logship import lenient_decode
from logship.amqp import FatalConnectError, TopologyError
from logship.cli import describe_os_error, named
from logship.config import fail, load_settings
from logship.lifecycle import run
from logship.logs import setup_logging
from logship.telemetry import TelemetryError
from producer.checkpoint import CheckpointError
from producer.metrics import ProducerMetrics
from producer.settings import ProducerSettings

EPILOG = """\
examples:
  logship-producer --input /var/log/app.log --checkpoint /var/lib/logship/producer.checkpoint \\
      --amqp.url amqps://shipper@broker:5671/ --amqp.ca-file /etc/logship/ca.pem
  LOGSHIP_INPUT='/var/log/app/*.log' LOGSHIP_AMQP__PASSWORD=s3cret logship-producer --once

exit codes: 0 stopped or done (--once), 1 crashed (logged as crashed), 2 wrong setting or
refused by the broker at start, 130 forced by a second stop signal."""


def main(argv: list[str] | None = None, *, early: EarlySignals | None = None) -> int:
    early = early or EarlySignals.catch()
    settings = load_settings(ProducerSettings, argv, EPILOG)
    setup_logging(settings.log.level, settings.log.format)
    lenient_decode.install()  # returned messages are decoded like deliveries
    try:
        from producer.app import ProducerApp

        async def serve() -> int:
            return await ProducerApp(settings, ProducerMetrics()).run(early)

        return run(serve)
    except CheckpointError as error:
        fail(f"{named('checkpoint')}: {error}")
    except (FatalConnectError, TopologyError, TelemetryError) as error:
        fail(str(error))
    except OSError as error:  # a file a setting names, not usable after all
        fail(
            describe_os_error(
                error, {"input": [settings.input], "checkpoint": [settings.checkpoint]}
            )
        )


if __name__ == "__main__":
    sys.exit(main(early=EARLY))
