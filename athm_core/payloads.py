"""Every inbound shape of an ATH Móvil event, turned into one typed, normalized :class:`AthmEvent`.

ATH Móvil sends the same event in several shapes (documented and production casing, ``subtotal`` or
``subTotal``, money as strings, integers or float noise, dates with 0 to 6 fractional digits), and its
transaction report lists transactions in a shape of its own (:func:`parse_report_row`). Every one of them
ends here as an :class:`AthmEvent`. :func:`read_amount` is the one reader of an amount, for ATH Móvil's API
answers too. Nothing in this module touches the database.

Money that moved is never refused for a reason that is not what happened, so the fields are read two ways:

- **Strict**: the type and status, the ids (``ecommerceId``, ``referenceNumber``, the daily transaction id),
  the amounts, and a refund's date (part of its identity). Anything wrong there raises
  :class:`PayloadError` naming the field (:class:`AmountError` for an amount).
- **Cleaned**: everything else (customer fields, message, metadata, items' text and quantities, a
  payment's dates). NUL and lone surrogates are replaced with U+FFFD, text longer than its column is cut,
  a number is taken as text, a value that is not text at all is left out. Each change is an
  :class:`AthmEvent` ``warnings`` entry; the stored raw body keeps what was sent.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from athm_core.events import EventType, Identity
from athm_core.text import storable

# ATH Móvil works in Puerto Rico time (AST, UTC-4 all year) and sends dates without a zone.
PUERTO_RICO = ZoneInfo("America/Puerto_Rico")

CENT = Decimal("0.01")
# ATH Móvil computes some amounts in float arithmetic (0.7 - 0.6 in single precision is
# 0.09999996423721313): an amount less than a tenth of a cent from a cent value is that value.
FLOAT_NOISE = Decimal("0.001")
# No ATH Móvil transaction comes near this; a larger amount is a forgery or a bug, not a payment.
MAX_AMOUNT = Decimal("1000000.00")

_EARLIEST_DATE = datetime(2000, 1, 1, tzinfo=PUERTO_RICO)
_LATEST_DATE = datetime(2100, 1, 1, tzinfo=PUERTO_RICO)
_DAILY_ID = re.compile(r"[0-9]{1,9}")
# A number as text: ASCII digits, an optional sign, fraction and exponent (NaN and Infinity are told apart).
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(NaN|sNaN|Infinity|Inf)", re.I)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?")

# Longest accepted id, longest stored text per field (the columns' sizes); ATH's own values are far shorter.
_ID_LENGTH = 100
_TEXT_LENGTH = 255
_PHONE_LENGTH = 40
_MESSAGE_LENGTH = 1000
_MAX_ITEMS = 200
# The amounts of an event, by their names in a body (ATH's answers use the same names).
AMOUNT_FIELDS = ("total", "subtotal", "subTotal", "tax", "fee", "netAmount", "totalRefundedAmount")


class PayloadError(ValueError):
    """The body is not an ATH Móvil event this handler can read; ``field`` names where it went wrong.

    ``data`` is the decoded body (a ``dict``) when the error is in one of its fields, else ``None``.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.data: dict | None = None


class AmountError(PayloadError):
    """An amount cannot be read. With verification on, ATH Móvil's findPayment answer can stand in for the
    body's amounts (:func:`athm_core.ath.verification.amounts_from_ath`)."""


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """What was changed in a descriptive field to store it: ``field`` as in the body (``items[0].name``)."""

    field: str
    warning: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "warning": self.warning}


# The normalizer's cases: (transactionType, status), both lower-cased, to the kind of event they mean.
_EVENT_TYPES = {
    ("ecommerce", "completed"): EventType.ECOMMERCE_COMPLETED,
    ("ecommerce", "cancelled"): EventType.ECOMMERCE_CANCELLED,
    ("ecommerce", "cancel"): EventType.ECOMMERCE_CANCELLED,
    ("ecommerce", "expired"): EventType.ECOMMERCE_EXPIRED,
    ("refund", "completed"): EventType.REFUND_SENT,
    ("payment", "completed"): EventType.PAYMENT_RECEIVED,
    ("donation", "completed"): EventType.DONATION_RECEIVED,
    ("simulated", "completed"): EventType.SIMULATED,
}


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    description: str
    quantity: int | None  # None when the body's quantity could not be read (see the event's warnings)
    price: Decimal
    tax: Decimal | None
    metadata: str
    sku: str

    def as_json(self) -> dict[str, Any]:
        """The item as JSON-ready data, money as exact decimal strings."""
        return {
            "name": self.name,
            "description": self.description,
            "quantity": self.quantity,
            "price": str(self.price),
            "tax": None if self.tax is None else str(self.tax),
            "metadata": self.metadata,
            "sku": self.sku,
        }


@dataclass(frozen=True, slots=True)
class AthmEvent:
    """One ATH Móvil event, whatever shape it arrived in. Money is exact to the cent, dates are aware.

    ``date`` is ``None`` only for an event whose date could not be read and is not part of its identity
    (anything but a refund); ``warnings`` lists what was cleaned to store the descriptive fields.
    """

    type: EventType
    ecommerce_id: str | None
    reference_number: str | None
    daily_transaction_id: int | None
    date: datetime | None
    transaction_date: datetime | None
    total: Decimal
    subtotal: Decimal | None
    tax: Decimal | None
    fee: Decimal | None
    net_amount: Decimal | None
    total_refunded_amount: Decimal | None
    name: str
    phone_number: str
    email: str
    message: str
    metadata_1: str
    metadata_2: str
    business_name: str
    items: tuple[Item, ...]
    warnings: tuple[FieldWarning, ...] = field(default=(), compare=False)
    # When ATH Móvil confirmed the event (set by the check, athm_core.ath.verification); None: unconfirmed.
    verified_at: datetime | None = field(default=None, compare=False)

    @property
    def idempotency_key(self) -> str:
        """Equal for every delivery of the same event, different for different events.

        Made of the parts the kind's ``identity`` names: an eCommerce payment has one event per status,
        keyed by its ``ecommerceId``, else (ATH Móvil's published shape) by its reference number, else (a
        cancelled or expired checkout in that shape) by its :attr:`fingerprint`; app payments and
        donations are one per reference number; refunds may share the payment's reference number
        (partial refunds), so their daily number, date and amount tell them apart.
        """
        if self.type.identity == Identity.CHECKOUT:
            if self.ecommerce_id:
                return f"{self.type}:{self.ecommerce_id}"
            if self.reference_number:
                return f"{self.type}:reference:{self.reference_number}"
            return f"{self.type}:fingerprint:{self.fingerprint}"
        if self.type.identity == Identity.REFERENCE:
            return f"{self.type}:{self.reference_number}"
        return (
            f"{self.type}:{self.reference_number}:{self.daily_transaction_id or ''}"
            f":{self.date.astimezone(PUERTO_RICO).isoformat() if self.date else ''}:{self.total}"
        )

    @property
    def fingerprint(self) -> str | None:
        """For an eCommerce event that names neither an ``ecommerceId`` nor a reference number: a digest
        (SHA-256, hex) of everything it says, equal for each delivery of it; ``None`` for any other event.

        ATH Móvil's published cancelled and expired events carry no identifier at all, only the metadata,
        amounts, items and date of the checkout (its 2020 webhooks README; ``tests/samples/*.legacy.json``).
        """
        if not self.type.is_ecommerce or self.ecommerce_id or self.reference_number:
            return None
        skipped = ("warnings", "items", "verified_at")
        content = {each.name: getattr(self, each.name) for each in fields(self) if each.name not in skipped}
        for name in ("date", "transaction_date"):  # the same instant, whatever offset it was written with
            if content[name] is not None:
                content[name] = content[name].astimezone(PUERTO_RICO)
        # In a canonical order: the same checkout's items listed in another order are the same checkout.
        content["items"] = sorted(
            (item.as_json() for item in self.items), key=lambda item: json.dumps(item, sort_keys=True)
        )
        text = json.dumps(content, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def effective_date(self) -> datetime | None:
        """When the transaction happened: ``transactionDate`` where ATH sends it, else ``date``."""
        return self.transaction_date or self.date


def parse(body: str | bytes, *, charset: str = "") -> AthmEvent:
    """Read a webhook body (JSON text, or its bytes in ``charset``, UTF-8 by default) into an event.

    Raises :class:`PayloadError` (:class:`AmountError` for an amount) naming the field at fault.
    """
    text, warnings = decode(body, charset)
    event = parse_data(load_json(text))
    return replace(event, warnings=warnings + event.warnings) if warnings else event


def decode(body: str | bytes, charset: str = "") -> tuple[str, tuple[FieldWarning, ...]]:
    """The body's text: its bytes read in the declared ``charset`` (UTF-8 when none is declared), and what
    reading it changed.

    A charset Python cannot read text with is read as UTF-8; a UTF-8 byte order mark is dropped; bytes that
    are not valid in the charset are replaced with U+FFFD. Each is a warning: the body still has to read as
    an event, and the strict fields (:func:`parse_data`) refuse a U+FFFD.
    """
    if isinstance(body, str):
        return body, ()
    warnings: list[FieldWarning] = []
    codec = text_codec(charset)
    if codec is None:
        warnings.append(FieldWarning("charset", f"not a character set {charset[:40]!r}; read as UTF-8"))
        codec = "utf-8"
    try:
        text = body.decode(codec)
    except UnicodeDecodeError:
        text = body.decode(codec, errors="replace")
        warnings.append(FieldWarning("body", f"bytes that are not valid {codec} replaced with U+FFFD"))
    if text.startswith("\ufeff"):
        # json.loads refuses it; RFC 8259 lets a reader ignore it.
        text = text[1:]
        warnings.append(FieldWarning("body", "a byte order mark before the JSON, left out"))
    return text, tuple(warnings)


# Codecs that Python looks up by name but that do not read bytes as text (idna reads host names).
_NOT_TEXT_CODECS = {"idna", "punycode", "undefined"}


def text_codec(charset: str) -> str | None:
    """The Python codec for a declared ``charset`` (``"utf-8"`` when none is declared), or ``None`` when it
    names no character set that text can be read with (``base64``, ``rot13``, ``klingon``)."""
    name = charset.strip().strip('"').strip() or "utf-8"
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # A bytes-to-bytes codec (base64, zlib, hex) is not a text encoding.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_TEXT_CODECS:
        return None
    return info.name


def load_json(body: str | bytes) -> Any:
    """JSON with numbers kept exact: floats become ``Decimal`` and NaN or Infinity are refused."""
    if isinstance(body, bytes):
        body = decode(body)[0]
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except PayloadError:
        raise
    except RecursionError as exc:
        raise PayloadError("body", "is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError
        raise PayloadError("body", f"is not valid JSON ({exc})") from exc


def _integer(text: str) -> int | Decimal:
    # Python refuses to turn more than 4,300 digits into an int; as a Decimal, such a number in a text field
    # is cleaned like any other, and as an amount it is refused for its size, not the body for its JSON.
    return int(text) if len(text) <= 1000 else Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise PayloadError("body", f"{name} is not a number ATH Móvil sends")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; a body that says two things is refused.
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise PayloadError("body", f"has the key {key!r:.40} more than once")
        data[key] = value
    return data


def parse_report_row(row: Any) -> AthmEvent:
    """Read one row of ATH Móvil's transaction report (decoded JSON) into an :class:`AthmEvent`.

    A row is a webhook body with two differences (seen in ATH's transactionReport answers): the refunded
    sum is ``totalRefundAmount`` (webhooks: ``totalRefundedAmount``), and a row may carry only
    ``transactionDate``, which then stands for ``date`` too.
    """
    if isinstance(row, dict):
        row = dict(row)
        if "totalRefundAmount" in row and "totalRefundedAmount" not in row:
            row["totalRefundedAmount"] = row.pop("totalRefundAmount")
        if not row.get("date") and row.get("transactionDate"):
            row["date"] = row["transactionDate"]
    return parse_data(row)


def read_items(value: Any) -> tuple[Item, ...]:
    """``items`` as an event's are read (ATH Móvil's findPayment answer carries them in the same shape).
    Raises :class:`AmountError` for an item's unreadable amount."""
    return _Reader({"items": value}).items()


def read_answer_fields(data: dict) -> dict[str, Any]:
    """The fields of ATH Móvil's answer (findPayment's) that describe a transaction beyond its order and
    money, read as an event's are: ``{"daily_transaction_id", "transaction_date", "name", "email",
    "phone_number"}`` for those the answer gives and that can be read."""
    reader = _Reader(data)
    found: dict[str, Any] = {}
    if any(data.get(name) not in (None, "") for name in ("dailyTransactionId", "dailyTransactionID")):
        with contextlib.suppress(PayloadError):  # unreadable: the body's stands
            found["daily_transaction_id"] = reader.daily_id()
    if data.get("transactionDate"):
        transaction_date = reader.date("transactionDate", strict=False)
        if transaction_date is not None:
            found["transaction_date"] = transaction_date
    for name in ("name", "email"):
        if isinstance(data.get(name), str) and data[name].strip():
            found[name] = reader.text(name)
    if data.get("phoneNumber") not in (None, ""):
        phone = reader.phone()
        if phone:  # unreadable (an object, no digits): the body's stands
            found["phone_number"] = phone
    return found


def read_text(value: Any, field: str) -> str:
    """A descriptive field (``metadata1``, ``name``) as an event's is read: stripped, cleaned, cut."""
    return _Reader({field: value}).text(field)


def parse_data(data: Any) -> AthmEvent:
    """Normalize decoded JSON (one webhook object) into an :class:`AthmEvent`.

    Raises :class:`PayloadError` naming the field (its ``data`` is ``data``); cleans descriptive fields
    into the event's ``warnings`` instead of refusing them.
    """
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {_json_type(data)}")
    try:
        return _Reader(data).event()
    except PayloadError as exc:
        exc.data = data
        raise


class _Reader:
    """One body's fields read, strictly or cleaned; what cleaning changed is kept in ``warnings``."""

    def __init__(self, data: dict, where: str = "", warnings: list[FieldWarning] | None = None) -> None:
        self.data = data
        self.where = where
        self.warnings = [] if warnings is None else warnings

    def event(self) -> AthmEvent:
        event_type = self._event_type()
        ecommerce_id = self.identifier("ecommerceId") or None
        reference_number = self.identifier("referenceNumber") or None
        # Cancelled and expired checkouts never reached a transaction, so they have no reference number;
        # in ATH's published shape they have no ecommerceId either (see AthmEvent.fingerprint).
        if reference_number is None and event_type not in (
            EventType.ECOMMERCE_CANCELLED,
            EventType.ECOMMERCE_EXPIRED,
        ):
            raise PayloadError("referenceNumber", "is required")

        total = self.amount("total")
        if total is None:
            raise AmountError("total", "is required")
        # A refund's date is part of its identity (two partial refunds share a reference number).
        strict_date = event_type.identity == Identity.TRANSACTION
        date = self.date("date", strict=strict_date)
        if date is None and strict_date:
            raise PayloadError("date", "is required")
        transaction_date = self.date("transactionDate", strict=False)
        if date is None and transaction_date is None and self.data.get("date") in (None, ""):
            self.warn("date", "absent: the transaction has no date")

        return AthmEvent(
            type=event_type,
            ecommerce_id=ecommerce_id,
            reference_number=reference_number,
            daily_transaction_id=self.daily_id(),
            date=date,
            transaction_date=transaction_date,
            total=total,
            subtotal=self.amount("subtotal", "subTotal"),
            tax=self.amount("tax"),
            fee=self.amount("fee"),
            net_amount=self.amount("netAmount"),
            total_refunded_amount=self.amount("totalRefundedAmount"),
            name=self.text("name"),
            phone_number=self.phone(),
            email=self.text("email"),
            message=self.text("message", _MESSAGE_LENGTH),
            metadata_1=self.text("metadata1"),
            metadata_2=self.text("metadata2"),
            business_name=self.text("businessName"),
            items=self.items(),
            warnings=tuple(self.warnings),
        )

    def warn(self, field: str, warning: str) -> None:
        self.warnings.append(FieldWarning(self.where + field, warning))

    def _event_type(self) -> EventType:
        transaction_type = self.identifier("transactionType", 32).lower()
        if not transaction_type:
            raise PayloadError("transactionType", "is required")
        status = self.identifier("status", 32).lower()
        if not status:
            raise PayloadError("status", "is required")
        try:
            return _EVENT_TYPES[transaction_type, status]
        except KeyError:
            known_types = {known for known, _ in _EVENT_TYPES}
            if transaction_type not in known_types:
                raise PayloadError("transactionType", f"unknown value {transaction_type!r}") from None
            raise PayloadError("status", f"unknown value {status!r} for {transaction_type!r}") from None

    def identifier(self, field: str, max_length: int = _ID_LENGTH) -> str:
        """A string that decides what happened, stripped; absent, null and empty read as ''. Strict."""
        value = self.data.get(field)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise PayloadError(field, f"must be a string, not {_json_type(value)}")
        value = value.strip()
        if len(value) > max_length:
            raise PayloadError(field, f"is longer than {max_length} characters")
        if storable(value) != value:
            raise PayloadError(field, "contains a NUL character or an unpaired surrogate")
        if "\ufffd" in value:
            raise PayloadError(field, "contains U+FFFD (bytes that were not valid text)")
        return value

    def text(self, field: str, max_length: int = _TEXT_LENGTH) -> str:
        """A descriptive string, stripped and cleaned to fit its column; absent, null and empty read as ''."""
        value = self.data.get(field)
        if value is None:
            return ""
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            self.warn(field, f"{_json_type(value)}, taken as text")
            value = _number_text(value)
        elif not isinstance(value, str):
            self.warn(field, f"{_json_type(value)}, not text: left out (the stored body keeps it)")
            return ""
        return self._fit(field, value.strip(), max_length)

    def _fit(self, field: str, value: str, max_length: int) -> str:
        cleaned = storable(value)
        if cleaned != value:
            self.warn(field, "NUL characters or unpaired surrogates replaced with U+FFFD")
        if len(cleaned) > max_length:
            self.warn(field, f"cut from {len(cleaned)} to {max_length} characters")
            cleaned = cleaned[:max_length]
        return cleaned

    def amount(self, *fields: str) -> Decimal | None:
        """An amount in dollars, exact to the cent, from the first of ``fields`` that is present. Strict."""
        field = next((name for name in fields if name in self.data), fields[0])
        return read_amount(self.data.get(field), field)

    def date(self, field: str, *, strict: bool) -> datetime | None:
        """A date; an unreadable one is refused when ``strict``, else left out with a warning."""
        try:
            return _date(self.data, field)
        except PayloadError as exc:
            if strict:
                raise
            self.warn(field, f"{exc.problem}; left out (the stored body keeps it)")
            return None

    def daily_id(self) -> int | None:
        """``dailyTransactionID`` or ``dailyTransactionId``: ``"0007"``, ``"3"`` or ``35`` read as numbers."""
        field = "dailyTransactionID" if "dailyTransactionID" in self.data else "dailyTransactionId"
        value = self.data.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
            value = int(value)  # 8.0
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
            return value
        if isinstance(value, str) and _DAILY_ID.fullmatch(value.strip()):
            return int(value.strip())
        raise PayloadError(field, f"must be a whole number, not {value!r:.40}")

    def phone(self) -> str:
        """Digits only: ``"7871234567"``, ``"(787) 123-4567"``, ``7871234567`` and ``7871234567.0`` are the
        same phone."""
        value = self.data.get("phoneNumber")
        if value is None:
            return ""
        if isinstance(value, (float, Decimal)) or (isinstance(value, int) and not isinstance(value, bool)):
            if not isinstance(value, int):
                self.warn("phoneNumber", "a number, taken as text")
            value = _number_text(value)
        elif not isinstance(value, str):
            self.warn("phoneNumber", f"{_json_type(value)}, not text: left out (the stored body keeps it)")
            return ""
        digits = "".join(character for character in value if character.isdigit() and character.isascii())
        if len(digits) > _PHONE_LENGTH:
            self.warn("phoneNumber", f"cut from {len(digits)} to {_PHONE_LENGTH} digits")
            digits = digits[:_PHONE_LENGTH]
        return digits

    def items(self) -> tuple[Item, ...]:
        items = self.data.get("items")
        if items is None:
            return ()
        if not isinstance(items, list):
            self.warn("items", f"{_json_type(items)}, not a list: left out (the stored body keeps it)")
            return ()
        if len(items) > _MAX_ITEMS:
            self.warn("items", f"{len(items)} entries; the first {_MAX_ITEMS} kept")
            items = items[:_MAX_ITEMS]
        read = []
        for index, entry in enumerate(items):
            where = f"items[{index}]"
            if not isinstance(entry, dict):
                self.warn(where, f"{_json_type(entry)}, not an object: left out")
                continue
            read.append(_Reader(entry, f"{self.where}{where}.", self.warnings).item())
        return tuple(read)

    def item(self) -> Item:
        try:
            price = self.amount("price")
            tax = self.amount("tax")
        except PayloadError as exc:
            raise type(exc)(f"{self.where}{exc.field}", exc.problem) from None
        return Item(
            name=self.text("name"),
            description=self.text("description", _MESSAGE_LENGTH),
            quantity=self.quantity(),
            price=Decimal("0.00") if price is None else price,
            tax=tax,
            metadata=self.text("metadata"),
            sku=self.text("sku"),
        )

    def quantity(self) -> int | None:
        value = self.data.get("quantity")
        if value is None or value == "":
            return 1
        quantity = None
        if not isinstance(value, bool) and isinstance(value, (int, float, Decimal, str)):
            try:
                quantity = _decimal(value)
            except (InvalidOperation, ValueError):
                quantity = None
        if (
            quantity is None
            or not quantity.is_finite()
            or quantity != quantity.to_integral_value()
            or not 0 < quantity < 10**6
        ):
            shown = value if isinstance(value, (int, Decimal, str)) else _json_type(value)
            self.warn("quantity", f"not a whole number from 1 to 999999 ({shown!r:.40}): left out")
            return None
        return int(quantity)


def read_amount(value: Any, field: str) -> Decimal | None:
    """``value`` as dollars exact to the cent; ``None`` when it is absent (null or blank).

    Takes what ATH Móvil sends for money: a number, or a string holding one (``"26.00"``, ``26``, ``26.0``),
    and float noise: an amount less than a tenth of a cent (:data:`FLOAT_NOISE`) from a cent value is that
    value (``0.6000000238418579`` is 0.60, ``0.09999996423721313`` is 0.10). Raises :class:`AmountError`
    naming ``field`` for anything else: not a number, negative, ``MAX_AMOUNT`` or more, or further from a
    cent value (``3.005``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise AmountError(field, f"must be an amount, not {_json_type(value)}")
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        # Decimal() also reads "12_50", Arabic-Indic and full-width digits: none is an amount ATH sends.
        raise AmountError(field, f"is not an amount: {value!r:.40}")
    try:
        amount = _decimal(value)
    except (InvalidOperation, ValueError):
        raise AmountError(field, f"is not an amount: {value!r:.40}") from None
    if not amount.is_finite():
        raise AmountError(field, "must be a finite amount")
    if amount < 0:
        raise AmountError(field, "must not be negative")
    if amount >= MAX_AMOUNT:
        raise AmountError(field, f"is not below the limit of {MAX_AMOUNT}")
    cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if abs(cents - amount) >= FLOAT_NOISE:
        raise AmountError(field, f"has more than two decimals: {value!r:.40}")
    return cents if cents else Decimal("0.00")  # never -0.00


def _decimal(value: int | float | Decimal | str) -> Decimal:
    if isinstance(value, str):
        return Decimal(value.strip())
    # repr() is the shortest text that reads back as the same float: 0.07, not 0.07000000000000000666.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _number_text(value: int | float | Decimal) -> str:
    """A JSON number as text: whole numbers without a fraction (``7875550102.0`` is ``"7875550102"``)."""
    if isinstance(value, float):
        value = _decimal(value) if value == value and abs(value) != float("inf") else Decimal(0)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        # Within what a phone or a name could hold; an exponent of thousands of digits is not text.
        return str(int(value)) if value.adjusted() < 100 else str(value)
    return str(value)


def _date(data: dict, field: str) -> datetime | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(field, f"must be a date string, not {_json_type(value)}")
    value = value.strip()
    if not _DATE.fullmatch(value):
        raise PayloadError(field, f"is not a date like '2026-11-20 14:05:12.0': {value!r:.40}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(field, f"is not a valid date: {value!r:.40}") from None
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=PUERTO_RICO)
    # Far dates overflow on the way to UTC, and MySQL stores no year before 1000.
    if not _EARLIEST_DATE <= aware <= _LATEST_DATE:
        raise PayloadError(field, f"is not a date ATH Móvil sends: {value!r:.40}")
    return aware


def read_date(data: dict, field: str) -> datetime | None:
    """The date ``data[field]`` in ATH Móvil's form, as an aware datetime (Puerto Rico time); ``None`` when
    absent; :class:`PayloadError` when it is not a date (for ATH's answers, such as the refund API's)."""
    return _date(data, field)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
