"""``athm watch_topic``: print every message published to ``ATHM_SNS_TOPIC_ARN`` as it arrives.

For local runs against moto's server (``AWS_ENDPOINT_URL=http://127.0.0.1:5000``), where ``--create`` also
creates the topic, and for a look at a real topic. It subscribes a queue of its own to the topic (raw
delivery, so what it prints is exactly the published body), reads it until interrupted, then removes it.
"""

import contextlib
import json
import os
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Print the messages published to ATHM_SNS_TOPIC_ARN (subscribes a temporary SQS queue)."

    def add_arguments(self, parser):
        parser.add_argument("--create", action="store_true", help="create the topic first if it is missing")
        parser.add_argument(
            "--max-messages", type=int, metavar="N", help="stop after N messages instead of at Ctrl-C"
        )

    def handle(self, *args, create, max_messages, **options):
        arn = settings.ATHM_SNS_TOPIC_ARN
        if not arn:
            raise CommandError("set ATHM_SNS_TOPIC_ARN to the topic to watch")
        from botocore.exceptions import BotoCoreError, ClientError

        self.watching = False
        try:
            self._watch(arn, create, max_messages)
        except (BotoCoreError, ClientError) as exc:
            # moto's server stopped (or never started), the network went: one line, not a traceback.
            where = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
            if self.watching:
                raise CommandError(f"SNS/SQS stopped answering at {where}: {exc}") from None
            raise CommandError(
                f"SNS/SQS is not answering at {where}: {exc}. Is moto's server (or the endpoint) running?"
            ) from None

    def _watch(self, arn: str, create: bool, max_messages: int | None) -> None:
        import boto3

        region, name = arn.split(":")[3], arn.split(":")[5]
        sns = boto3.client("sns", region_name=region)
        sqs = boto3.client("sqs", region_name=region)
        if create:
            fifo = {"FifoTopic": "true"} if name.endswith(".fifo") else {}
            created = sns.create_topic(Name=name, Attributes=fifo)["TopicArn"]
            if created != arn:
                raise CommandError(f"created {created}, which is not ATHM_SNS_TOPIC_ARN={arn}")
        queue_name = f"athm-watch-{uuid.uuid4().hex[:8]}" + (".fifo" if name.endswith(".fifo") else "")
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        queue_url = sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
        try:
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": _policy(queue_arn, arn)})
            subscription = sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
            try:
                self.watching = True
                self.stdout.write(f"watching {arn} (Ctrl-C to stop)")
                self.stdout.flush()
                self._print_messages(sqs, queue_url, max_messages)
            except KeyboardInterrupt:
                pass
            finally:
                _quietly(sns.unsubscribe, SubscriptionArn=subscription)
        finally:
            _quietly(sqs.delete_queue, QueueUrl=queue_url)

    def _print_messages(self, sqs, queue_url: str, max_messages: int | None) -> None:
        printed = 0
        while max_messages is None or printed < max_messages:
            received = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=5
            ).get("Messages", [])
            for message in received[: None if max_messages is None else max_messages - printed]:
                attributes = {
                    key: value.get("StringValue")
                    for key, value in message.get("MessageAttributes", {}).items()
                }
                self.stdout.write(json.dumps({"attributes": attributes, "body": json.loads(message["Body"])}))
                self.stdout.flush()
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                printed += 1


def _quietly(call, **arguments) -> None:
    """Clean up what the watch made, if SNS/SQS still answers (the first error is the one to report)."""
    from botocore.exceptions import BotoCoreError, ClientError

    with contextlib.suppress(BotoCoreError, ClientError):
        call(**arguments)


def _policy(queue_arn: str, topic_arn: str) -> str:
    """Let the topic, and only it, send to the queue (real SNS needs this; moto does not check)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )
