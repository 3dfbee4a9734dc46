"""Example consumer of the events athm-lambda publishes to SNS: a fulfilment service, ready to copy.

SNS delivers each event to an SQS queue, and Lambda hands this function batches of up to 10 messages.
Each event is acted on once: delivery is at least once (SNS, SQS and the publisher's retries can all send
an event again), so the Powertools Idempotency utility records every event ``id`` in DynamoDB and skips an
id it has already handled. A message that cannot be handled (bad JSON, a ``schema_version`` this code does
not know, an exception in :func:`fulfil`) is reported as a batch item failure: SQS delivers it again later,
and after ``maxReceiveCount`` attempts moves it to the dead-letter queue. The rest of the batch is kept.

Replace :func:`fulfil` with your business action. The message body is described by
``docs/schemas/athm-event.v1.schema.json`` in the athm-lambda repository.

Environment: ``IDEMPOTENCY_TABLE`` (the DynamoDB table), ``POWERTOOLS_SERVICE_NAME`` (the log's service).
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

SCHEMA_VERSION = 1

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
idempotency = IdempotencyConfig(
    event_key_jmespath="id",
    raise_on_no_idempotency_key=True,
    # How long an id is remembered. Redeliveries come within minutes or hours; a week leaves a wide margin.
    expires_after_seconds=7 * 24 * 60 * 60,
)


class UnsupportedMessage(ValueError):
    """A message this consumer cannot read; it goes back to the queue and, in the end, to the DLQ."""


# --- your business action: replace this --------------------------------------------------------------


def fulfil(event: dict[str, Any]) -> None:
    """Act on one event. Called once per event id; raise to have the message delivered again.

    ``payment["metadata_1"]`` is the order reference your checkout gave ATH Móvil. Money is an exact
    decimal string ("12.34"): use ``decimal.Decimal``, never float. Don't log customer data.
    """
    payment = event["payment"]
    if event["type"] == "payment_completed":
        # e.g. orders.mark_paid(payment["metadata_1"], amount=Decimal(payment["total"]))
        logger.info("order paid", extra={"order": payment["metadata_1"], "total": payment["total"]})
    elif event["type"] == "refund_sent":
        # e.g. orders.record_refund(payment["metadata_1"], amount=Decimal(event["refund"]["amount"]))
        logger.info(
            "refund recorded",
            extra={"order": payment["metadata_1"], "amount": event["refund"]["amount"]},
        )
    else:  # a type the subscription's filter policy lets through but this service has no use for
        logger.info("event ignored", extra={"event_type": event["type"]})


# --- plumbing ----------------------------------------------------------------------------------------


def parse(body: str) -> dict[str, Any]:
    """The event in an SQS message body: raw message delivery, or inside the SNS envelope."""
    try:
        document = json.loads(body)
        if isinstance(document, dict) and document.get("Type") == "Notification":
            document = json.loads(document["Message"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedMessage(f"the message is not an event: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise UnsupportedMessage("the message is not a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise UnsupportedMessage(f"schema_version {document.get('schema_version')!r} is not supported")
    return document


@idempotent_function(data_keyword_argument="event", config=idempotency, persistence_store=persistence)
def handle(event: dict[str, Any]) -> str:
    with logger.append_context_keys(event_id=event["id"], event_type=event["type"]):
        fulfil(event)
    return event["id"]


def record_handler(record: SQSRecord) -> None:
    with logger.append_context_keys(message_id=record.message_id):
        try:
            handle(event=parse(record.body))
        except Exception:
            logger.exception("message not handled; SQS delivers it again")
            raise


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The idempotency records of a function that times out mid-event expire with its remaining time.
    idempotency.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
