"""``athm relay``: what the scheduled relay function does, from a shell: finish the notices deliveries left
(athm_core's ``relay``), then publish the pending outbox messages to ``ATHM_SNS_TOPIC_ARN`` when it is set."""

from django.conf import settings
from django.core.management.base import CommandError

from athm_core.management.commands import relay


class Command(relay.Command):
    help = relay.Command.help + " Then publish the pending outbox messages to ATHM_SNS_TOPIC_ARN, if set."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--batch-size", type=int, default=25, help="messages locked per transaction")

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        from handler.observability import console_logs

        with console_logs():
            super().handle(*args, batch_size=batch_size, **options)

    def run_once(self, *, retry_now, batch_size, **options):
        from handler import relay
        from handler.observability import metrics

        try:
            result = relay.run(retry_now=retry_now, batch_size=batch_size)
        finally:
            # A shell has no CloudWatch to flush the metrics to.
            metrics.clear_metrics()
        self.stdout.write(self.describe(result["notices"]))
        if "outbox" in result:
            outbox = result["outbox"]
            self.stdout.write(
                f"outbox: published {outbox['published']}, failed {outbox['failed']},"
                f" pending {outbox['pending']} (oldest waiting {outbox['oldest_pending_seconds']:.0f} s)"
            )
        elif not settings.ATHM_SNS_TOPIC_ARN:
            self.no_topic()

    def no_topic(self) -> None:
        """Say what the outbox holds when this shell has no topic to publish it to: messages that a server
        with a topic wrote (``make serve`` with ``ATHM_SNS_TOPIC_ARN`` exported, say) wait for one."""
        from athm_core import outbox

        waiting = outbox.backlog()
        if not waiting.pending:
            self.stdout.write(
                "outbox: nothing to publish (no message waits; ATHM_SNS_TOPIC_ARN is not set here)"
            )
            return
        self.stderr.write(
            f"outbox: {waiting.pending} message(s) wait to be published (the oldest for"
            f" {waiting.oldest_age().total_seconds():.0f} s), but ATHM_SNS_TOPIC_ARN is not set in this"
            " shell. Export the ATHM_SNS_TOPIC_ARN that the server had (and its AWS_ENDPOINT_URL, for"
            " moto's server), then run athm relay again."
        )
