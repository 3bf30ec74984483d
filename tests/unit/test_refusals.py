"""The one line a broker refusal at start becomes (logship.amqp.describe_refusal), for the reply
texts RabbitMQ 3.10 sends; the programs' exit codes are tested end to end in
tests/integration/test_start_refusals.py."""

from __future__ import annotations

import aiormq.exceptions
import pytest

from logship.amqp import describe_refusal
from logship.config import AmqpSettings

PRECONDITION = aiormq.exceptions.ChannelPreconditionFailed


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'logs' in vhost "
            "'/': received the value '20' of type 'signedint' but current is the value '5' of "
            "type 'long'",
            "queue 'logs' exists with different arguments (x-delivery-limit: '5' there, '20' "
            "wanted): delete it or set --amqp.delivery-limit 5",
        ),
        (
            # the reply RabbitMQ 3.10.8 sent for a queue declared with a replica count of 1
            "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue "
            "'logs' in vhost '/': received none but current is the value '1' of type "
            "'signedint'",
            "queue 'logs' exists with different arguments (x-quorum-initial-group-size: '1' "
            "there, none wanted): delete it or set --amqp.quorum-initial-group-size 1",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'logs' in vhost '/': "
            "received 'true' but current is 'false'",
            "queue 'logs' exists with different arguments (durable: 'false' there, 'true' "
            "wanted): delete it so it is declared again, or declare it yourself and set "
            "--no-amqp.declare",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs.dead' in vhost "
            "'/': received 'fanout' but current is 'direct'",
            "exchange 'logs.dead' exists with a different type ('direct' there, 'fanout' "
            "wanted): delete it or set --amqp.dead-letter-exchange to another name",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue 'logs.archive' in "
            "vhost '/': received '1D' but current is '7D'",
            "queue 'logs.archive' exists with different arguments (x-max-age: '7D' there, '1D' "
            "wanted): delete it or set --archive.max-age 7D",
        ),
        (
            "PRECONDITION_FAILED - something new",
            "broker refused the topology: something new",
        ),
    ],
)
def test_reply_texts_become_one_line_with_what_to_do(reply: str, line: str) -> None:
    assert describe_refusal(PRECONDITION(reply), AmqpSettings()) == line
