"""``athm reprocess EVENT_ID... | --failed``: process stored webhook bodies again.

The work is :func:`athm_core.replay.reprocess`, through the same path as a new delivery (ATH Móvil's
verification included); this picks the events and prints one line per event.
"""

from django.core.management.base import BaseCommand, CommandError

from athm_core import replay


class Command(BaseCommand):
    help = (
        "Process the stored raw bodies of recorded webhook events again, as new deliveries (verified with "
        "ATH Móvil like the webhook when ATHM_VERIFY is on). Each attempt is recorded as a new webhook "
        "event; the original stays as it was. What was applied before comes out as a duplicate. Purged "
        "and rejected events, and bodies that still do not parse, are refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID", help="webhook event ids")
        parser.add_argument(
            "--failed",
            action="store_true",
            help="every failed event not purged and not settled since (the latest delivery of each)",
        )

    def handle(self, *args, event_ids, failed, **options):
        if not event_ids and not failed:
            raise CommandError("name the webhook event ids, or use --failed")
        events = list(event_ids)
        if failed:
            events += [pk for pk in replay.failed_events().values_list("pk", flat=True)]
        results = replay.reprocess(dict.fromkeys(events))
        for result in results:
            self.stdout.write(str(result))
        bad = sum(result.status in (replay.REFUSED, replay.Outcome.FAILED) for result in results)
        self.stdout.write(f"{len(results)} event(s) reprocessed, {bad} refused or failed")
        if bad:
            raise CommandError(f"{bad} event(s) were refused or failed again")
