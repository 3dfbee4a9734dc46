"""``athm refund``: refund a payment through ATH Móvil's refund API, or ask what became of a pending one.

The work is :func:`athm_core.refunds.refund` (refusals before anything is sent, the refund recorded
pending before the call, completed from ATH's answer), :func:`athm_core.refunds.check` (``--check``:
ATH's transaction report for the refund's day) and :func:`athm_core.refunds.abandon` (``--fail``: a
pending refund that ATH Móvil shows never happened, marked failed by hand). The tokens come from the
settings ``ATHM_PUBLIC_TOKEN`` and ``ATHM_PRIVATE_TOKEN``, never from an option; neither is printed.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from athm_core import refunds
from athm_core.ath.client import AthmApiError
from athm_core.models import Payment, Refund
from athm_core.payloads import PUERTO_RICO


class Command(BaseCommand):
    help = (
        "Refund a completed payment (by its id or reference number) through ATH Móvil: all that is still "
        "refundable, or --amount. Asks for confirmation, showing the refundable amount, unless --yes. "
        "--check PENDING_ID asks ATH Móvil's transaction report what became of a refund left pending; "
        "--fail PENDING_ID marks one failed that ATH Móvil shows never happened (ATH Business lists no such "
        "refund), so that its amount is refundable again."
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
        parser.add_argument(
            "--fail",
            type=int,
            metavar="PENDING_ID",
            help="mark a pending refund failed: only once ATH Business shows it never happened",
        )
        parser.add_argument("--reason", default="", help="with --fail: how you know it never happened")

    def handle(self, *args, payment, amount, message, yes, check, fail, reason, **options):
        if check is not None and fail is not None:
            raise CommandError("--check or --fail, not both")
        if (check is not None or fail is not None) and (payment or amount is not None or message):
            raise CommandError("--check and --fail take a refund id, and no payment, --amount or --message")
        if check is not None:
            return self._check(check)
        if fail is not None:
            return self._fail(fail, reason, yes)
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
            if not _confirmed(f"Refund {what} through ATH Móvil? [y/N] "):
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
        for anomaly in getattr(made, "flagged", []):
            # Made, so never a failure (a script must not ask again): said loudly, flagged on the payment.
            self.stderr.write(
                f"WARNING: ATH Móvil's answer is not what was asked: {anomaly['kind']}: {anomaly['detail']} "
                f"(flagged on payment {found.pk}; docs/operations.md, AnomalyAlarm)"
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

    def _fail(self, pk: int, reason: str, yes: bool) -> None:
        refund = Refund.objects.filter(pk=pk).first()
        if refund is None or refund.status != Refund.Status.PENDING or refund.requested_at is None:
            try:
                refunds.abandon(pk, reason)  # says why not
            except refunds.RefundError as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            f"refund {pk}: {refund.amount} of payment {refund.payment_id}, asked for "
            f"{refund.requested_at.astimezone(PUERTO_RICO):%Y-%m-%d %H:%M} (Puerto Rico), pending: "
            f"{refund.error or 'no answer from ATH Móvil'}"
        )
        if not yes:
            question = (
                "Mark it failed? Only if ATH Business lists no such refund: if it was made, the customer has "
                "the money and it will no longer be counted. [y/N] "
            )
            if not _confirmed(question):
                raise CommandError("not confirmed: refund still pending")
        try:
            failed = refunds.abandon(pk, reason)
        except refunds.RefundError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"refund {pk} marked failed; payment {failed.payment_id} refundable again: "
            f"{refunds.refundable(failed.payment)}"
        )


def _confirmed(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    return answer.strip().lower() in {"y", "yes"}


def _payment(name: str) -> Payment:
    name = name.strip()
    found = None
    if name.isdigit():
        found = Payment.objects.filter(pk=int(name)).first()
    found = found or Payment.objects.filter(reference_number=name).first()
    if found is None:
        raise CommandError(f"no payment has the id or reference number {name!r}")
    return found
