"""Every inbound shape of an ATH Móvil event, turned into one typed, normalized :class:`AthmEvent`.

ATH Móvil sends the same event in several shapes (documented and production casing, ``subtotal`` or
``subTotal``, money as strings, integers or float noise, dates with 0 to 6 fractional digits), and its
transaction report lists transactions in a shape of its own (:func:`parse_report_row`). Every one of them
ends here as an :class:`AthmEvent`; anything that cannot be read raises :class:`PayloadError` naming the
field. :func:`read_amount` is the one reader of an amount, for ATH Móvil's API answers too. Nothing in this
module touches the database.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from athm_core.events import EventType, Identity

# ATH Móvil works in Puerto Rico time (AST, UTC-4 all year) and sends dates without a zone.
PUERTO_RICO = ZoneInfo("America/Puerto_Rico")

CENT = Decimal("0.01")
# No ATH Móvil transaction comes near this; a larger amount is a forgery or a bug, not a payment.
MAX_AMOUNT = Decimal("1000000.00")

_EARLIEST_DATE = datetime(2000, 1, 1, tzinfo=PUERTO_RICO)
_LATEST_DATE = datetime(2100, 1, 1, tzinfo=PUERTO_RICO)
_DAILY_ID = re.compile(r"[0-9]{1,9}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?")

# Longest accepted text per field; ATH's own values are far shorter.
_ID_LENGTH = 100
_TEXT_LENGTH = 255
_MESSAGE_LENGTH = 1000
_MAX_ITEMS = 200


class PayloadError(ValueError):
    """The body is not an ATH Móvil event this handler can read; ``field`` names where it went wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


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
    quantity: int
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
    """One ATH Móvil event, whatever shape it arrived in. Money is exact to the cent, dates are aware."""

    type: EventType
    ecommerce_id: str | None
    reference_number: str | None
    daily_transaction_id: int | None
    date: datetime
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

    @property
    def idempotency_key(self) -> str:
        """Equal for every delivery of the same event, different for different events.

        Made of the parts the kind's ``identity`` names: an eCommerce payment has one event per status;
        app payments and donations are one per reference number; refunds may share the payment's
        reference number (partial refunds), so their daily number, date and amount tell them apart.
        """
        if self.type.identity == Identity.CHECKOUT:
            return f"{self.type}:{self.ecommerce_id}"
        if self.type.identity == Identity.REFERENCE:
            return f"{self.type}:{self.reference_number}"
        return (
            f"{self.type}:{self.reference_number}:{self.daily_transaction_id or ''}"
            f":{self.date.isoformat()}:{self.total}"
        )

    @property
    def effective_date(self) -> datetime:
        """When the transaction happened: ``transactionDate`` where ATH sends it, else ``date``."""
        return self.transaction_date or self.date


def parse(body: str | bytes) -> AthmEvent:
    """Read a webhook body (JSON text) into an :class:`AthmEvent`."""
    return parse_data(load_json(body))


def load_json(body: str | bytes) -> Any:
    """JSON with numbers kept exact: floats become ``Decimal`` and NaN or Infinity are refused."""
    if isinstance(body, bytes):
        # ATH Móvil sends UTF-8; json.loads would guess UTF-16 or UTF-32 from the first bytes.
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError("body", "is not valid UTF-8") from exc
    try:
        return json.loads(
            body, parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except PayloadError:
        raise
    except RecursionError as exc:
        raise PayloadError("body", "is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise PayloadError("body", f"is not valid JSON ({exc})") from exc


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


def parse_data(data: Any) -> AthmEvent:
    """Normalize decoded JSON (one webhook object) into an :class:`AthmEvent`."""
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {_json_type(data)}")
    event_type = _event_type(data)

    ecommerce_id = _text(data, "ecommerceId", _ID_LENGTH) or None
    if event_type.is_ecommerce and ecommerce_id is None:
        raise PayloadError("ecommerceId", "is required for eCommerce events")
    reference_number = _text(data, "referenceNumber", _ID_LENGTH) or None
    # Cancelled and expired checkouts never reached a transaction, so they have no reference number.
    if reference_number is None and event_type not in (
        EventType.ECOMMERCE_CANCELLED,
        EventType.ECOMMERCE_EXPIRED,
    ):
        raise PayloadError("referenceNumber", "is required")

    total = _money(data, "total")
    if total is None:
        raise PayloadError("total", "is required")
    date = _date(data, "date")
    if date is None:
        raise PayloadError("date", "is required")

    return AthmEvent(
        type=event_type,
        ecommerce_id=ecommerce_id,
        reference_number=reference_number,
        daily_transaction_id=_daily_id(data),
        date=date,
        transaction_date=_date(data, "transactionDate"),
        total=total,
        subtotal=_money(data, "subtotal", "subTotal"),
        tax=_money(data, "tax"),
        fee=_money(data, "fee"),
        net_amount=_money(data, "netAmount"),
        total_refunded_amount=_money(data, "totalRefundedAmount"),
        name=_text(data, "name", _TEXT_LENGTH),
        phone_number=_phone(data),
        email=_text(data, "email", _TEXT_LENGTH),
        message=_text(data, "message", _MESSAGE_LENGTH),
        metadata_1=_text(data, "metadata1", _TEXT_LENGTH),
        metadata_2=_text(data, "metadata2", _TEXT_LENGTH),
        business_name=_text(data, "businessName", _TEXT_LENGTH),
        items=_items(data),
    )


def _event_type(data: dict) -> EventType:
    transaction_type = _text(data, "transactionType", 32).lower()
    if not transaction_type:
        raise PayloadError("transactionType", "is required")
    status = _text(data, "status", 32).lower()
    if not status:
        raise PayloadError("status", "is required")
    try:
        return _EVENT_TYPES[transaction_type, status]
    except KeyError:
        known_types = {known for known, _ in _EVENT_TYPES}
        if transaction_type not in known_types:
            raise PayloadError("transactionType", f"unknown value {transaction_type!r}") from None
        raise PayloadError("status", f"unknown value {status!r} for {transaction_type!r}") from None


def _text(data: dict, field: str, max_length: int) -> str:
    """A string field, stripped of stray spaces; absent, null and empty all read as ''."""
    value = data.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(field, f"must be a string, not {_json_type(value)}")
    value = value.strip()
    if len(value) > max_length:
        raise PayloadError(field, f"is longer than {max_length} characters")
    if "\x00" in value:
        raise PayloadError(field, "contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (\ud800) from a JSON escape: no database stores it
            raise PayloadError(field, "contains an unpaired surrogate") from None
    return value


def _money(data: dict, *fields: str) -> Decimal | None:
    """An amount in dollars, exact to the cent, from the first of ``fields`` that is present."""
    field = next((name for name in fields if name in data), fields[0])
    return read_amount(data.get(field), field)


def read_amount(value: Any, field: str) -> Decimal | None:
    """``value`` as dollars exact to the cent; ``None`` when it is absent (null or blank).

    Takes what ATH Móvil sends for money: a number, or a string holding one (``"26.00"``, ``26``, ``26.0``,
    and single-precision float noise such as ``0.6000000238418579`` for 0.60). Raises
    :class:`PayloadError` naming ``field`` for anything else: not a number, negative, ``MAX_AMOUNT`` or
    more, or finer than a cent beyond what a float blurs.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise PayloadError(field, f"must be an amount, not {_json_type(value)}")
    try:
        amount = _decimal(value)
    except (InvalidOperation, ValueError):
        raise PayloadError(field, f"is not an amount: {value!r:.40}") from None
    if not amount.is_finite():
        raise PayloadError(field, "must be a finite amount")
    if amount < 0:
        raise PayloadError(field, "must not be negative")
    if amount >= MAX_AMOUNT:
        raise PayloadError(field, f"is not below the limit of {MAX_AMOUNT}")
    cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if cents != amount and (not cents or _as_float32(amount) != _as_float32(cents)):
        # ATH Móvil sends some amounts as single-precision floats (0.6000000238418579 for 0.60).
        # Those are cents in disguise; anything finer than what a float can blur is not.
        raise PayloadError(field, f"has more than two decimals: {value!r:.40}")
    return cents


def _decimal(value: int | float | Decimal | str) -> Decimal:
    if isinstance(value, str):
        return Decimal(value.strip())
    # repr() is the shortest text that reads back as the same float: 0.07, not 0.07000000000000000666.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _as_float32(amount: Decimal) -> float:
    return struct.unpack("f", struct.pack("f", float(amount)))[0]


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


def _daily_id(data: dict) -> int | None:
    """``dailyTransactionID`` or ``dailyTransactionId``: ``"0007"``, ``"3"`` or ``35`` all read as numbers."""
    field = "dailyTransactionID" if "dailyTransactionID" in data else "dailyTransactionId"
    value = data.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return value
    if isinstance(value, str) and _DAILY_ID.fullmatch(value.strip()):
        return int(value.strip())
    raise PayloadError(field, f"must be a whole number, not {value!r:.40}")


def _phone(data: dict) -> str:
    """Digits only: ``"7871234567"``, ``"(787) 123-4567"`` and ``7871234567`` are the same phone."""
    value = data.get("phoneNumber")
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PayloadError("phoneNumber", f"must be a string or number, not {_json_type(value)}")
    if len(value) > 40:
        raise PayloadError("phoneNumber", "is longer than 40 characters")
    return "".join(character for character in value if character.isdigit())


def _items(data: dict) -> tuple[Item, ...]:
    items = data.get("items")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise PayloadError("items", f"must be a list, not {_json_type(items)}")
    if len(items) > _MAX_ITEMS:
        raise PayloadError("items", f"has more than {_MAX_ITEMS} entries")
    return tuple(_item(entry, f"items[{index}]") for index, entry in enumerate(items))


def _item(entry: Any, where: str) -> Item:
    if not isinstance(entry, dict):
        raise PayloadError(where, f"must be an object, not {_json_type(entry)}")
    try:
        price = _money(entry, "price")
        return Item(
            name=_text(entry, "name", _TEXT_LENGTH),
            description=_text(entry, "description", _MESSAGE_LENGTH),
            quantity=_quantity(entry),
            price=Decimal("0.00") if price is None else price,
            tax=_money(entry, "tax"),
            metadata=_text(entry, "metadata", _TEXT_LENGTH),
            sku=_text(entry, "sku", _TEXT_LENGTH),
        )
    except PayloadError as exc:
        raise PayloadError(f"{where}.{exc.field}", exc.problem) from None


def _quantity(entry: dict) -> int:
    value = entry.get("quantity")
    if value is None or value == "":
        return 1
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise PayloadError("quantity", f"must be a whole number, not {_json_type(value)}")
    try:
        quantity = _decimal(value)
    except (InvalidOperation, ValueError):
        raise PayloadError("quantity", f"is not a number: {value!r:.40}") from None
    if not quantity.is_finite() or quantity != quantity.to_integral_value() or not 0 < quantity < 10**6:
        raise PayloadError("quantity", f"must be a whole number from 1 to 999999, not {value!r:.40}")
    return int(quantity)


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
