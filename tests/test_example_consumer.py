"""The example SNS consumer (examples/sns_consumer), fed by the handler's own topic under moto.

The subscription's filter policy is read from the example's template, and the consumer's handler gets the
messages that queue received, as Lambda's SQS event source would hand them over.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT, Topic, cfn_lint, load_template, sample, sample_data

EXAMPLE = ROOT / "examples" / "sns_consumer"
TEMPLATE = EXAMPLE / "template.yaml"
REGION = "us-east-1"


# --- the template ----------------------------------------------------------------------------------------


def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resource(of_type: str) -> dict[str, Any]:
    [found] = [r["Properties"] for r in template()["Resources"].values() if r["Type"] == of_type]
    return found


def filter_policy() -> dict[str, Any]:
    return resource("AWS::SNS::Subscription")["FilterPolicy"]


def test_the_template_passes_cfn_lint():
    result = cfn_lint(TEMPLATE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_template_gives_the_consumer_what_it_expects():
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    function = resource("AWS::Serverless::Function")
    queue = template()["Resources"]["EventQueue"]["Properties"]
    subscription = resource("AWS::SNS::Subscription")
    table = resource("AWS::DynamoDB::Table")
    assert function["Handler"] == "consumer.lambda_handler" and function["Runtime"] == "python3.11"
    assert function["Environment"]["Variables"]["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert function["Policies"] == [{"DynamoDBCrudPolicy": {"TableName": {"Ref": "IdempotencyTable"}}}]
    [source] = function["Events"].values()
    assert source["Type"] == "SQS" and source["Properties"]["Queue"] == {"Fn::GetAtt": "EventQueue.Arn"}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": "DeadLetterQueue.Arn"}
    assert subscription["RawMessageDelivery"] is True
    assert subscription["Endpoint"] == {"Fn::GetAtt": "EventQueue.Arn"}
    assert subscription["TopicArn"] == {"Ref": "TopicArn"}
    # The key and TTL attributes are the ones Powertools writes by default.
    defaults = inspect.signature(DynamoDBPersistenceLayer).parameters
    assert table["KeySchema"] == [{"AttributeName": defaults["key_attr"].default, "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": defaults["expiry_attr"].default,
        "Enabled": True,
    }
    assert defaults["expiry_attr"].default == "expiration"
    assert table["BillingMode"] == "PAY_PER_REQUEST"


# --- SQS, as the consumer sees it ------------------------------------------------------------------------


def subscribe(topic: Topic, name: str, *, raw: bool = True, policy: dict[str, Any] | None = None) -> str:
    """Another queue subscribed to ``topic``; its URL."""
    url = topic.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = topic.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"RawMessageDelivery": "true" if raw else "false"}
    if policy:
        attributes["FilterPolicy"] = json.dumps(policy)
    topic.sns.subscribe(TopicArn=topic.arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def receive(topic: Topic, queue_url: str | None = None) -> list[dict[str, Any]]:
    """Every message waiting in the queue, as SQS returns them (left in flight, not deleted)."""
    entries: list[dict[str, Any]] = []
    while batch := topic.sqs.receive_message(
        QueueUrl=queue_url or topic.queue_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
        WaitTimeSeconds=0,
    ).get("Messages", []):
        entries += batch
    return entries


def sqs_event(topic: Topic, entries: list[dict[str, Any]], queue_url: str | None = None) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from ``entries``."""
    queue_arn = topic.sqs.get_queue_attributes(
        QueueUrl=queue_url or topic.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    return {
        "Records": [
            {
                "messageId": entry["MessageId"],
                "receiptHandle": entry["ReceiptHandle"],
                "body": entry["Body"],
                "attributes": entry.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in entry.get("MessageAttributes", {}).items()
                },
                "md5OfBody": entry["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for entry in entries
        ]
    }


def record(body: str) -> dict[str, Any]:
    """A record Lambda could hand over, with ``body``; the attributes don't matter to the consumer."""
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:fulfilment-queue",
        "awsRegion": REGION,
    }


@dataclass
class LambdaContext:
    function_name: str = "fulfilment"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:fulfilment"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Consumer:
    """The example's module, loaded fresh, with every call of ``fulfil`` recorded."""

    module: ModuleType
    table: str
    fulfilled: list[dict[str, Any]]
    dynamodb: Any
    log: io.StringIO

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.module.lambda_handler(event, LambdaContext())

    def fulfilled_ids(self) -> list[str]:
        return [event["id"] for event in self.fulfilled]

    def logs(self) -> list[dict[str, Any]]:
        """What the consumer's Powertools logger wrote, one JSON document a line."""
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def remembered(self) -> dict[str, str]:
        """The idempotency records: status by record key."""
        items = self.dynamodb.scan(TableName=self.table)["Items"]
        return {item["id"]["S"]: item["status"]["S"] for item in items}


@pytest.fixture
def consumer(aws, monkeypatch) -> Consumer:
    """consumer.py with its idempotency table (as the template defines it) in moto."""
    import boto3

    table = "fulfilment-idempotency"
    properties = resource("AWS::DynamoDB::Table")
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=table,
        BillingMode=properties["BillingMode"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification=properties["TimeToLiveSpecification"]
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "fulfilment")
    spec = importlib.util.spec_from_file_location("sns_consumer_example", EXAMPLE / "consumer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = io.StringIO()
    module.logger.registered_handler.setStream(log)

    fulfilled: list[dict[str, Any]] = []
    real_fulfil = module.fulfil

    def recording_fulfil(event: dict[str, Any]) -> None:
        fulfilled.append(event)
        real_fulfil(event)

    monkeypatch.setattr(module, "fulfil", recording_fulfil)
    return Consumer(module, table, fulfilled, dynamodb, log)


def post(lambda_handler, name: str, **changes: Any) -> dict[str, Any]:
    body = json.dumps({**sample_data(name), **changes}) if changes else sample(name)
    response = lambda_handler.post(body)
    assert response.status == 200, response
    return response.json()


# --- the tests -------------------------------------------------------------------------------------------


def test_the_templates_filter_policy_lets_through_only_the_events_the_consumer_acts_on(
    lambda_handler, make_topic, event_schema
):
    topic = make_topic(filter_policy=filter_policy())
    everything = subscribe(topic, "unfiltered")

    post(lambda_handler, "ecommerce_completed.documented")  # order-1001: payment_completed
    post(lambda_handler, "ecommerce_cancelled.production")  # order-1003: payment_cancelled
    post(lambda_handler, "refund_sent.documented")  # refund of order-1001: refund_sent
    post(lambda_handler, "payment_received")  # a payment in the app: payment_received
    assert post(lambda_handler, "ecommerce_completed.documented")["duplicate"] is True
    assert post(lambda_handler, "refund_sent.documented")["duplicate"] is True

    published = sorted(json.loads(entry["Body"])["type"] for entry in receive(topic, everything))
    assert published == ["payment_cancelled", "payment_completed", "payment_received", "refund_sent"]

    entries = receive(topic)
    events = {json.loads(entry["Body"])["type"]: json.loads(entry["Body"]) for entry in entries}
    assert len(entries) == 2 and sorted(events) == ["payment_completed", "refund_sent"]
    for entry in entries:
        body = json.loads(entry["Body"])
        event_schema.validate(body)
        assert entry["MessageAttributes"]["event_type"] == {"DataType": "String", "StringValue": body["type"]}
    completed, refunded = events["payment_completed"], events["refund_sent"]
    assert completed["payment"]["metadata_1"] == refunded["payment"]["metadata_1"] == "order-1001"
    assert refunded["refund"]["amount"] == "1.50"
    assert refunded["payment"]["total_refunded_amount"] == "1.50"
    assert completed["id"] != refunded["id"]


def test_each_event_is_fulfilled_once_however_often_it_is_delivered(lambda_handler, make_topic, consumer):
    topic = make_topic(filter_policy=filter_policy())
    post(lambda_handler, "ecommerce_completed.documented")
    post(lambda_handler, "refund_sent.documented")
    entries = receive(topic)
    batch = sqs_event(topic, entries)
    ids = sorted(json.loads(entry["Body"])["id"] for entry in entries)

    assert consumer(batch) == {"batchItemFailures": []}
    assert sorted(consumer.fulfilled_ids()) == ids
    assert {event["type"] for event in consumer.fulfilled} == {"payment_completed", "refund_sent"}
    assert sorted(consumer.remembered().values()) == ["COMPLETED", "COMPLETED"]

    # The same batch again (SQS redelivers it), and each event published again (the publisher's retry):
    # new SQS messages, the same event ids.
    assert consumer(batch) == {"batchItemFailures": []}
    for entry in entries:
        topic.sns.publish(
            TopicArn=topic.arn,
            Message=entry["Body"],
            MessageAttributes={
                name: {key: value[key] for key in ("DataType", "StringValue")}
                for name, value in entry["MessageAttributes"].items()
            },
        )
    republished = receive(topic)
    assert len(republished) == 2
    assert {entry["MessageId"] for entry in republished}.isdisjoint(entry["MessageId"] for entry in entries)
    assert consumer(sqs_event(topic, republished)) == {"batchItemFailures": []}
    assert sorted(consumer.fulfilled_ids()) == ids
    assert len(consumer.remembered()) == 2


def test_a_batch_reports_only_the_messages_that_cannot_be_handled(lambda_handler, make_topic, consumer):
    topic = make_topic(filter_policy=filter_policy())
    post(lambda_handler, "ecommerce_completed.documented")
    [good] = sqs_event(topic, receive(topic))["Records"]
    malformed = record('{"schema_version": 1, "id": ')
    not_an_object = record("[1]")
    newer = json.loads(good["body"])
    newer.update(schema_version=2, id=str(uuid.uuid4()))
    version_2 = record(json.dumps(newer))

    result = consumer({"Records": [malformed, good, version_2, not_an_object]})

    assert result == {
        "batchItemFailures": [
            {"itemIdentifier": malformed["messageId"]},
            {"itemIdentifier": version_2["messageId"]},
            {"itemIdentifier": not_an_object["messageId"]},
        ]
    }
    assert consumer.fulfilled_ids() == [json.loads(good["body"])["id"]]
    assert list(consumer.remembered().values()) == ["COMPLETED"]
    failures = [log for log in consumer.logs() if log["level"] == "ERROR"]
    assert [(log["message"], log["message_id"]) for log in failures] == [
        ("message not handled; SQS delivers it again", item["itemIdentifier"])
        for item in result["batchItemFailures"]
    ]

    # A batch that fails entirely fails the invocation: Lambda returns all of it to the queue.
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    with pytest.raises(BatchProcessingError):
        consumer({"Records": [malformed, version_2]})
    assert len(consumer.fulfilled) == 1


def test_an_event_whose_fulfilment_failed_is_fulfilled_when_delivered_again(
    lambda_handler, make_topic, consumer, monkeypatch
):
    topic = make_topic(filter_policy=filter_policy())
    post(lambda_handler, "ecommerce_completed.documented")
    post(lambda_handler, "refund_sent.documented")
    batch = sqs_event(topic, receive(topic))
    recording_fulfil = consumer.module.fulfil
    outage = iter([ConnectionError("the order service is down")])

    def fulfil(event: dict[str, Any]) -> None:
        recording_fulfil(event)
        if event["type"] == "refund_sent" and (error := next(outage, None)):
            raise error

    monkeypatch.setattr(consumer.module, "fulfil", fulfil)
    [refund_record] = [r for r in batch["Records"] if json.loads(r["body"])["type"] == "refund_sent"]

    assert consumer(batch) == {"batchItemFailures": [{"itemIdentifier": refund_record["messageId"]}]}
    assert sorted(consumer.remembered().values()) == ["COMPLETED"]
    assert consumer(batch) == {"batchItemFailures": []}
    assert [event["type"] for event in consumer.fulfilled].count("refund_sent") == 2
    assert [event["type"] for event in consumer.fulfilled].count("payment_completed") == 1
    assert sorted(consumer.remembered().values()) == ["COMPLETED", "COMPLETED"]


def test_the_sns_envelope_is_unwrapped(lambda_handler, make_topic, consumer):
    topic = make_topic(filter_policy=filter_policy())
    enveloped = subscribe(topic, "enveloped", raw=False, policy=filter_policy())
    post(lambda_handler, "ecommerce_completed.documented")
    [entry] = receive(topic, enveloped)
    envelope = json.loads(entry["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic.arn
    event = json.loads(envelope["Message"])

    assert consumer(sqs_event(topic, [entry], enveloped)) == {"batchItemFailures": []}
    assert consumer.fulfilled == [event]
    # The raw delivery of the same event, in the other queue, is the same event: nothing more to do.
    assert consumer(sqs_event(topic, receive(topic))) == {"batchItemFailures": []}
    assert consumer.fulfilled == [event]


def test_the_consumer_logs_the_order_but_no_customer_data(lambda_handler, make_topic, consumer, settings):
    settings.ATHM_OUTBOX_CUSTOMER_DATA = True
    topic = make_topic(filter_policy=filter_policy())
    post(lambda_handler, "ecommerce_completed.documented")
    post(lambda_handler, "refund_sent.documented")
    entries = receive(topic)
    customers = [json.loads(entry["Body"])["customer"] for entry in entries]

    assert consumer(sqs_event(topic, entries)) == {"batchItemFailures": []}

    logs = consumer.logs()
    assert sorted((log["message"], log["order"], log["event_type"]) for log in logs) == [
        ("order paid", "order-1001", "payment_completed"),
        ("refund recorded", "order-1001", "refund_sent"),
    ]
    assert {log["event_id"] for log in logs} == {json.loads(entry["Body"])["id"] for entry in entries}
    assert {log["message_id"] for log in logs} == {entry["MessageId"] for entry in entries}
    text = consumer.log.getvalue()
    values = {value for customer in customers for value in customer.values() if value}
    assert {"Carmen Rivera", "carmen@example.com", "7875550101", "Devolución"} <= values
    for value in values:
        assert value not in text
