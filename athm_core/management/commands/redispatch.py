"""``athm redispatch EVENT_ID... | --failed``: send the signals that receivers raised on again.

The work is :func:`athm_core.replay.redispatch`; this picks the events and prints one line per event.
"""

from django.core.management.base import BaseCommand, CommandError

from athm_core import replay


class Command(BaseCommand):
    help = (
        "Send the signals of recorded webhook events again, only to the receivers that raised on them "
        "(WebhookEvent.receiver_errors), with the payment and refund rows as they are now. Rows are never "
        "changed; a receiver that succeeds has its failure cleared, one that raises again keeps it. "
        "An event with no failed receivers is left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID", help="webhook event ids")
        parser.add_argument(
            "--failed", action="store_true", help="every event with a failed receiver recorded"
        )

    def handle(self, *args, event_ids, failed, **options):
        if not event_ids and not failed:
            raise CommandError("name the webhook event ids, or use --failed")
        events = list(event_ids)
        if failed:
            events += [pk for pk in replay.events_with_failed_receivers().values_list("pk", flat=True)]
        results = replay.redispatch(dict.fromkeys(events))
        for result in results:
            self.stdout.write(str(result))
        still = sum(result.status in (replay.STILL_FAILING, replay.REFUSED) for result in results)
        self.stdout.write(f"{len(results)} event(s), {still} with receivers still failing or refused")
        if still:
            raise CommandError(f"{still} event(s) still have failing receivers or were refused")
