"""``athm redispatch EVENT_ID... | --failed | --forget RECEIVER``: deliver the unfinished notices of webhook
events now, or give up a receiver that is gone on purpose.

The work is :func:`athm_core.replay.redispatch`; this picks the events and prints one line per event.
"""

from django.core.management.base import BaseCommand, CommandError

from athm_core import dispatch, replay


class Command(BaseCommand):
    help = (
        "Deliver the unfinished notices of recorded webhook events now, whatever their backoff: each to the "
        "receivers that have not had it (they raised, or never ran), with the payment and refund rows as "
        "they are now. Rows are never changed; a receiver that succeeds is marked delivered, one that "
        "raises again keeps its failure. An event whose notices are all delivered is left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID", help="webhook event ids")
        parser.add_argument("--failed", action="store_true", help="every event with an unfinished notice")
        parser.add_argument(
            "--forget",
            metavar="RECEIVER",
            help="give up a receiver removed or renamed on purpose (module.qualname, as recorded) on every "
            "unfinished notice, instead of delivering",
        )

    def handle(self, *args, event_ids, failed, forget, **options):
        if forget:
            if event_ids or failed:
                raise CommandError("--forget takes no event ids and no --failed")
            count = dispatch.forget(forget)
            self.stdout.write(f"{forget} given up on {count} unfinished notice(s)")
            return
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
