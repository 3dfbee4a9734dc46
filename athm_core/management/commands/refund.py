"""``athm refund``: refund a payment through ATH Móvil's refund API, or ask what became of a pending one.

The work is :func:`athm_core.refunds.refund` (refusals before anything is sent, the refund recorded
pending before the call, completed from ATH's answer) and :func:`athm_core.refunds.check` (``--check``:
ATH's transaction report for the refund's day). The tokens come from the settings ``ATHM_PUBLIC_TOKEN``
and ``ATHM_PRIVATE_TOKEN``, never from an option; neither is printed.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from athm_core import refunds
from athm_core.ath.client import AthmApiError
from athm_core.models import Payment, Refund


class Command(BaseCommand):
    help = (
        "Refund a completed payment (by its id or reference number) through ATH Móvil: all that is still "
        "refundable, or --amount. Asks for confirmation, showing the refundable amount, unless --yes. "
        "--check PENDING_ID asks ATH Móvil's transaction report what became of a refund left pending."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "payment", nargs="?", metavar="PAYMENT_ID|REFERENCE", help="the payment to refund"
        )
        parser.add_argument(
            "--amount", help="dollars to refund, such as 5.00 (default: all still refundable)"
        )
        parser.add_argument("--message", default="", help="for the customer, at most 50 characters")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--check", type=int, metavar="PENDING_ID", help="settle a pending refund from ATH Móvil's report"
        )

    def handle(self, *args, payment, amount, message, yes, check, **options):
        if check is not None:
            if payment:
                raise CommandError("--check takes a refund id, and no payment")
            return self._check(check)
        if not payment:
            raise CommandError("name the payment to refund: its id or its reference number")
        found = _payment(payment)
        try:
            wanted = None if amount is None else refunds.parse_amount(amount)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        left = refunds.refundable(found)
        self.stdout.write(
            f"payment {found.pk} ({found.reference_number}), {found.status}: total {found.total}, "
            f"refunded {found.total_refunded_amount}, refundable {left} (pending refunds counted)"
        )
        if not yes:
            what = f"{left} (all still refundable)" if wanted is None else str(wanted)
            try:
                answer = input(f"Refund {what} through ATH Móvil? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("not confirmed: nothing was sent to ATH Móvil")
        try:
            made = refunds.refund(found, wanted, message)
        except refunds.RefundPending as exc:
            raise CommandError(str(exc)) from None
        except refunds.RefundError as exc:
            recorded = f" (refund {exc.refund.pk} recorded failed)" if exc.refund is not None else ""
            raise CommandError(f"not refunded: {exc}{recorded}") from None
        except ImproperlyConfigured as exc:
            raise CommandError(f"not refunded, nothing was sent: {exc}") from None
        self.stdout.write(
            f"refunded {made.amount} of payment {found.pk}: refund {made.pk}, ATH Móvil reference number "
            f"{made.refund_reference_number or '(not in its answer)'}"
        )

    def _check(self, pk: int) -> None:
        try:
            refund = refunds.check(pk)
        except refunds.RefundError as exc:
            raise CommandError(str(exc)) from None
        except (AthmApiError, ImproperlyConfigured) as exc:
            raise CommandError(f"cannot ask ATH Móvil, refund {pk} stays pending: {exc}") from None
        if refund.status == Refund.Status.PENDING:
            raise CommandError(
                f"ATH Móvil's report lists no refund of {refund.amount} of payment {refund.payment_id} yet: "
                f"refund {pk} stays pending (its webhook or a later check settles it)"
            )
        self.stdout.write(
            f"refund {pk} is {refund.status}: {refund.amount} of payment {refund.payment_id}, reference "
            f"number {refund.reference_number} in ATH Móvil's report"
        )


def _payment(name: str) -> Payment:
    name = name.strip()
    found = None
    if name.isdigit():
        found = Payment.objects.filter(pk=int(name)).first()
    found = found or Payment.objects.filter(reference_number=name).first()
    if found is None:
        raise CommandError(f"no payment has the id or reference number {name!r}")
    return found
