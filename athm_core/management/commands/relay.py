"""``relay``: finish what deliveries left after their commit, as the scheduled relay does.

The work is :func:`athm_core.replay.finish_pending`. In a Django project of your own, run it every minute
(cron, Celery beat, a systemd timer); the Lambda handler's ``athm relay`` extends it with SNS publishing.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from athm_core import replay


class Command(BaseCommand):
    help = (
        "Finish what webhook deliveries left: verify again the deliveries ATH Móvil could not be asked "
        "about, tie waiting refunds to payments recorded "
        "since, deliver notices unfinished for over a minute, and call failed receivers again once their "
        "backoff is over. Safe to run beside the webhook and other relays."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--retry-now",
            action="store_true",
            help="take every unfinished notice now: no grace period, no backoff (the cause is fixed)",
        )
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="keep running, one run every SECONDS, until interrupted",
        )

    def handle(self, *args, retry_now, watch, **options):
        if watch is not None and watch <= 0:
            raise CommandError("--watch takes a number of seconds above 0")
        while True:
            self.run_once(retry_now=retry_now, **options)
            if watch is None:
                return
            time.sleep(watch)

    def run_once(self, *, retry_now, **options):
        report = replay.finish_pending(retry_now=retry_now)
        self.stdout.write(self.describe(report.as_dict()))

    @staticmethod
    def describe(notices: dict) -> str:
        text = (
            f"notices: linked {notices['linked']} waiting refund(s), delivered {notices['delivered']}, "
            f"{notices['failed']} receiver failure(s), pending {notices['pending']}"
            f" (oldest waiting {notices['oldest_pending_seconds']:.0f} s)"
        )
        verification = notices.get("verification")
        if verification and (verification["pending"] or verification["settled"]):
            settled = ", ".join(f"{count} {outcome}" for outcome, count in verification["settled"].items())
            text += (
                f"\nverification: settled {settled or 'none'}, {verification['still_pending']} still pending"
                f" now, {verification['pending']} pending (oldest received"
                f" {verification['oldest_pending_seconds']:.0f} s ago)"
            )
        return text
