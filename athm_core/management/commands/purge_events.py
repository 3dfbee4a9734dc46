"""``athm purge_events --older-than DAYS``: the retention purge of stored webhook bodies, published outbox
messages and delivered notices.

The work is :func:`athm_core.retention.purge_events`; this prints what it did.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from athm_core.retention import purge_events


class Command(BaseCommand):
    help = (
        "Empty the stored raw bodies (and error texts) of the webhook events received more than DAYS days "
        "ago, keeping each event's row, outcome and links, and delete the outbox messages published and the "
        "notices delivered before then; pending messages and unfinished notices stay. Payments and refunds, "
        "customer name, phone and email included, are the business's records and are never touched. Safe "
        "to run again and beside the webhook function."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            required=True,
            metavar="DAYS",
            help="the retention period in days: at least 1 for a purge, any with --dry-run (0: everything)",
        )
        parser.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")

    def handle(self, *args, older_than, dry_run, **options):
        if older_than < 0:
            raise CommandError("--older-than cannot be negative: it is a number of days")
        if older_than < 1 and not dry_run:
            # A day at least: a recent event's stored body is what `athm reprocess` works from.
            raise CommandError(
                "--older-than must be at least 1 day for a purge (recent bodies are what `athm reprocess` "
                "needs); --dry-run counts with any number of days, 0 included"
            )
        report = purge_events(timedelta(days=older_than), dry_run=dry_run)
        cutoff = f"{timezone.localtime(report.cutoff):%Y-%m-%d %H:%M %Z}"
        if dry_run:
            self.stdout.write(
                f"would empty the stored bodies of {report.events} webhook events received before {cutoff}, "
                f"delete {report.outbox_messages} outbox messages published and {report.notices} notices "
                "delivered before then (dry run: nothing changed)"
            )
        else:
            self.stdout.write(
                f"emptied the stored bodies of {report.events} webhook events received before {cutoff}; "
                f"deleted {report.outbox_messages} outbox messages published and {report.notices} notices "
                "delivered before then"
            )
