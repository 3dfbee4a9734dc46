"""One delivery in: from the raw body of a webhook to the recorded :class:`~athm_core.models.WebhookEvent`.

:func:`receive` is the one path every delivery takes, whoever hands it over: the Lambda handler's webhook
view, ``athm reprocess`` and the admin's reprocess action, or a view of your own in any Django project::

    delivery = receive(request.body, source_ip=request.META.get("REMOTE_ADDR"))

The steps, each recorded so that nothing accepted is lost:

1. **Parse** (:func:`athm_core.payloads.parse`), in the charset the request declared. Descriptive fields
   that cannot be stored as sent are cleaned, and the cleaning kept as the delivery's ``warnings``. A body
   that cannot be read is kept as ``invalid`` with the reason, and nothing else changes; with
   verification on, one whose only fault is an unreadable amount takes ATH Móvil's amounts instead
   (:func:`~athm_core.ath.verification.amounts_from_ath`). Every delivery keeps its body byte for byte
   (``WebhookEvent.body_bytes``).
2. **Check** with ATH Móvil: ``check(event)`` returns ``None`` (go on) or why ATH Móvil contradicts the
   event, which is then kept as ``rejected`` and changes nothing; a check that can never confirm the event
   as things are raises :class:`~athm_core.ath.verification.Unverifiable`, and it is kept as
   ``unverified``, not applied. ``check`` defaults to the callable named
   by ``ATHM_VERIFIER`` (:func:`athm_core.ath.verification.check`, which asks findPayment when
   ``ATHM_VERIFY`` is on). When ATH Móvil cannot answer, the check raises
   :class:`~athm_core.ath.verification.Unavailable` (an ``OSError``, such as a timeout, counts the same):
   the delivery is kept as ``pending``, not applied, and the relay asks again until ATH answers
   (:func:`athm_core.replay.verify_pending`); ATHM Móvil documents no retries, so nothing waits on one. Any
   other exception from the check is a bug, kept like one of the processor's.
3. **Process** (:func:`athm_core.processor.process`): one transaction, then the receivers. An unexpected
   error is kept as ``failed`` with its traceback, nothing of it applied; ``OperationalError`` and
   ``InterfaceError`` (the database cannot serve now) reach the caller with nothing recorded.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from django.utils.module_loading import import_string

from athm_core import processor
from athm_core.ath.verification import (
    NotConfirmedYet,
    Unavailable,
    Unverifiable,
    amounts_from_ath,
    next_verification,
)
from athm_core.conf import athm_settings
from athm_core.models import WebhookEvent
from athm_core.payloads import AmountError, AthmEvent, PayloadError, parse, text_codec
from athm_core.text import storable

log = logging.getLogger(__name__)

Outcome = WebhookEvent.Outcome
# ``check(event)``: ``None`` to apply the event, the event as ATH Móvil confirms it (to apply that instead),
# or why ATH Móvil contradicts it; raises ``Unavailable`` (or an ``OSError``) when it cannot tell now.
Check = Callable[[AthmEvent], "AthmEvent | str | None"]

# The database cannot be reached or cannot serve now, as opposed to a bug.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Delivery:
    """What became of one delivery.

    ``outcome`` is a ``WebhookEvent.Outcome``; ``record`` the row that keeps the delivery, ``None`` only when
    the database failed while an invalid or failed delivery was being recorded; ``event`` the parsed event
    (``None`` for an invalid body); ``error`` why it was not applied: the payload's fault (``"total: must
    not be negative"``), the check's or the processor's reason for a rejection, or the exception's type;
    ``field`` the payload's field at fault, for an invalid body; ``contradicted`` whether the check (ATH
    Móvil) rejected it, as opposed to the processor (a reference number that another payment holds).
    """

    outcome: str
    record: WebhookEvent | None
    event: AthmEvent | None = None
    error: str = ""
    field: str = ""
    contradicted: bool = False

    @property
    def warnings(self) -> list[dict]:
        return self.record.warnings if self.record is not None else []


def receive(
    body: bytes,
    *,
    source_ip: str | None = None,
    request_id: str = "",
    charset: str = "",
    check: Check | None = None,
    keep_invalid: bool = True,
) -> Delivery:
    """Take one delivery of a webhook body (its bytes, as received) through parse, check and process.

    ``charset`` is the one the request's ``Content-Type`` declared (UTF-8 when empty). ``source_ip`` and
    ``request_id`` say where it came from (stored on the ``WebhookEvent``). ``check`` replaces
    ``ATHM_VERIFIER`` for this call. With ``keep_invalid=False`` a body that cannot be read raises
    :class:`~athm_core.payloads.PayloadError` instead of being recorded (a replay of a stored body).

    When ATH Móvil cannot be asked now, the delivery is kept as ``pending`` (with ``keep_invalid=False``,
    a replay, :class:`~athm_core.ath.verification.Unavailable` is raised instead, with nothing recorded).
    Raises ``OperationalError`` or ``InterfaceError`` when the database cannot serve; nothing is recorded.
    """
    kept = {**_kept_body(body, charset), "source_ip": source_ip, "request_id": request_id}
    try:
        event = _parse(body, charset)
    except PayloadError as exc:
        if not keep_invalid:
            raise
        return _refused(Outcome.INVALID, str(exc), kept, field=exc.field)
    except Unavailable as exc:  # ATH Móvil's amounts could not be asked for
        if not keep_invalid:
            raise
        return _pending(None, exc, kept)
    try:
        contradiction = _ask(check or configured_check(), event)
        if isinstance(contradiction, AthmEvent):  # confirmed: ATH's values are the record
            event, contradiction = contradiction, None
        if contradiction:
            # Recorded before any answer: a database that cannot record it makes the caller retry.
            rejected = processor.record(event=event, outcome=Outcome.REJECTED, error=contradiction, **kept)
            return Delivery(Outcome.REJECTED, rejected, event, contradiction, contradicted=True)
        record = processor.process(event, **kept)
    except Unverifiable as exc:
        reason = str(exc)
        kept_unverified = processor.record(event=event, outcome=Outcome.UNVERIFIED, error=reason, **kept)
        return Delivery(Outcome.UNVERIFIED, kept_unverified, event, reason)
    except Unavailable as exc:
        if not keep_invalid:
            raise
        return _pending(event, exc, kept)
    except DATABASE_UNAVAILABLE:
        raise
    except Exception as exc:
        log.error("processing webhook event %s failed: %s", event.idempotency_key, type(exc).__name__)
        # The traceback goes to the database with the delivery: exception texts may quote customer data.
        traceback_text = "".join(traceback.format_exception(exc))
        return _refused(Outcome.FAILED, traceback_text, kept, event=event, summary=type(exc).__name__)
    return Delivery(record.outcome, record, event, record.error)


def _pending(event: AthmEvent | None, exc: Exception, kept: dict) -> Delivery:
    """Keep a delivery that ATH Móvil could not be asked about, for the relay to verify again (see
    :func:`~athm_core.ath.verification.next_verification`). A database that cannot record it reaches the
    caller."""
    reason = str(exc)
    log.warning("webhook event kept pending verification: %s", type(exc).__name__)
    record = processor.record(
        event=event,
        outcome=Outcome.PENDING,
        error=reason,
        verify_after=next_verification(0),
        not_confirmed_at=timezone.now() if isinstance(exc, NotConfirmedYet) else None,
        **kept,
    )
    return Delivery(Outcome.PENDING, record, event, reason)


def _parse(body: bytes, charset: str) -> AthmEvent:
    """The event; for a body whose amounts cannot be read, with ATH Móvil's amounts where verification
    can give them. Raises the body's own :class:`PayloadError` otherwise, and ``Unavailable``."""
    try:
        return parse(body, charset=charset)
    except AmountError as exc:
        if exc.data is None:
            raise
        try:
            event = amounts_from_ath(exc.data)
        except PayloadError:
            event = None
        if event is None:
            raise
        return event


def _kept_body(body: bytes, charset: str) -> dict:
    """What is stored of the body: its text (decoded in ``charset``, the undecodable replaced, made
    storable), and its exact bytes where that text's UTF-8 is not them."""
    body = bytes(body)
    text = storable(body.decode(text_codec(charset) or "utf-8", errors="replace"))
    exact = None if text.encode("utf-8") == body else body
    return {"raw_body": text, "raw_bytes": exact, "charset": charset}


def configured_check() -> Check:
    """The callable that ``ATHM_VERIFIER`` names. Raises ``ImproperlyConfigured`` when there is none."""
    path = athm_settings.ATHM_VERIFIER
    try:
        check = _import_check(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"ATHM_VERIFIER: cannot import {path!r}: {exc}") from exc
    if not callable(check):
        raise ImproperlyConfigured(f"ATHM_VERIFIER: {path!r} is not a function")
    return check


def _ask(check: Check, event: AthmEvent) -> AthmEvent | str | None:
    try:
        return check(event)
    except OSError as exc:  # a timeout, a refused connection: the check cannot tell now
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _import_check(path: str) -> Check:
    return import_string(path)


def _refused(
    outcome: str,
    error: str,
    kept: dict,
    *,
    event: AthmEvent | None = None,
    field: str = "",
    summary: str = "",
) -> Delivery:
    """Keep an invalid or failed delivery, with ``error``; if the database fails, keep nothing (the answer
    would not change: the same body would be just as invalid, or fail again).

    ``summary`` stands for ``error`` in the answer when ``error`` is too long or too private to repeat (a
    traceback)."""
    try:
        record = processor.record(outcome=outcome, event=event, error=error, **kept)
    except DatabaseError:
        log.warning("could not record a %s delivery: the database is unavailable", outcome)
        record = None
    return Delivery(outcome, record, event, summary or error, field)
