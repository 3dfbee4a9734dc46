"""``athm find_payment ECOMMERCE_ID [--apply]``: ATH Móvil's view of one eCommerce payment (findPayment)
beside the row recorded here, field by field, differences marked; ``--apply`` records a completion this
database missed, through the processor.

The work is :mod:`athm_core.ath.lookup`. The public token comes from ``ATHM_PUBLIC_TOKEN`` and is never
printed.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from athm_core.ath.lookup import LookupFailed, look_up
from athm_core.ath.lookup import apply as apply_lookup


class Command(BaseCommand):
    help = (
        "Ask ATH Móvil (findPayment) about one eCommerce payment and print its answer (status, total, "
        "reference number, fee, net amount, refunded amount, date, metadata) beside the payment recorded "
        "here, marking each difference with *. Changes nothing, unless --apply and ATH Móvil reports a "
        "completion this database missed (the payment open or not recorded): that completion is recorded "
        "through the same processor as a webhook, so its signal and SNS message happen once."
    )

    def add_arguments(self, parser):
        parser.add_argument("ecommerce_id", metavar="ECOMMERCE_ID", help="the checkout's ecommerceId")
        parser.add_argument(
            "--apply",
            action="store_true",
            help="record a completion ATH Móvil reports and this database missed; never other differences",
        )

    def handle(self, *args, ecommerce_id, apply: bool, **options):
        try:
            lookup = look_up(ecommerce_id)
        except (ValueError, ImproperlyConfigured, LookupFailed) as exc:
            raise CommandError(str(exc)) from None
        for line in lookup.lines():
            self.stdout.write(line)
        if apply:
            self.stdout.write(apply_lookup(lookup)[1])
        elif lookup.missed_completion:
            self.stdout.write(
                "ATH Móvil reports a completion this database never recorded: "
                f"athm find_payment {lookup.ecommerce_id} --apply records it"
            )
