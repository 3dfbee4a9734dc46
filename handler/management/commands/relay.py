"""``athm relay``: publish the outbox messages still pending, as the scheduled relay function does."""

import time

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Publish pending outbox messages to ATHM_SNS_TOPIC_ARN: those whose publish failed or never ran. "
        "Safe to run beside the webhook function and other relays."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=25, help="messages locked per transaction")
        parser.add_argument(
            "--retry-now",
            action="store_true",
            help="do not wait out the backoff of messages that failed before (SNS is back)",
        )
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="keep running, one run every SECONDS, until interrupted",
        )

    def handle(self, *args, batch_size, retry_now, watch, **options):
        from handler import publisher
        from handler.observability import metrics

        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        while True:
            try:
                report = publisher.relay(batch_size=batch_size, retry_now=retry_now)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
            finally:
                # A shell has no CloudWatch to flush the metrics to.
                metrics.clear_metrics()
            self.stdout.write(
                f"published {report.published}, failed {report.failed}, pending {report.pending}"
                f" (oldest waiting {report.oldest_pending_seconds:.0f} s)"
            )
            if watch is None:
                return
            time.sleep(watch)
