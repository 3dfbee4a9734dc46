"""``athm reconcile``: bring the database in line with ATH Móvil's transaction report, as the scheduled
reconciliation function does.

The work is :func:`athm_core.ath.reconciliation.reconcile`: payments and refunds whose webhook never came
are created through the processor (their signals and outbox messages happen once); transactions already
recorded with other amounts are reported, never changed. The tokens come from the settings
``ATHM_PUBLIC_TOKEN`` and ``ATHM_PRIVATE_TOKEN``; neither is printed.
"""

from datetime import date

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from athm_core.ath.client import AthmApiError
from athm_core.ath.reconciliation import days_ending_today, reconcile


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not a date like 2026-11-20: {value!r}") from None


_day.__name__ = "date"  # argparse names the type in its error message


class Command(BaseCommand):
    help = (
        "Read ATH Móvil's transaction report for --from to --to (days in Puerto Rico time, both included; "
        "default yesterday and today) and create the payments and refunds whose webhook never came. "
        "Amounts that differ from the database are reported, not changed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--from", dest="from_day", type=_day, metavar="DATE", help="first day, YYYY-MM-DD"
        )
        parser.add_argument("--to", dest="to_day", type=_day, metavar="DATE", help="last day, YYYY-MM-DD")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="read the report and say what would be created; write nothing",
        )

    def handle(self, *args, from_day, to_day, dry_run, **options):
        if from_day is None or to_day is None:
            default_from, default_to = days_ending_today()
            from_day, to_day = from_day or default_from, to_day or default_to
        if from_day > to_day:
            raise CommandError(f"--from {from_day} is after --to {to_day}")
        try:
            report = reconcile(from_day, to_day, dry_run=dry_run)
        except (AthmApiError, ImproperlyConfigured) as exc:
            raise CommandError(f"reconciliation failed, nothing was changed: {exc}") from None
        for line in report.lines():
            self.stdout.write(line)
