"""The listener URL's secrets, as the webhook view needs them: which ones are accepted now, and whether a
path segment is one of them.

With ``ATHM_WEBHOOK_SECRET_ARN`` (as ``template.yaml`` deploys it) they are the comma-separated value of
that Secrets Manager secret (read through :mod:`handler.secrets_manager`), read again once they are five
minutes old, so a rotation (``put-secret-value "NEW,OLD"``, later ``"NEW"``) reaches warm containers
without a redeploy. When a read fails, the last good value stays in use and a warning is logged. Without
an ARN they are the comma-separated ``ATHM_WEBHOOK_SECRET``.

A secret is at least 32 characters. In Lambda a shorter one refuses the cold start (:func:`check_at_start`)
and, if a rotation brings one in later, it is ignored with an error log while the others keep working.
Outside Lambda a short one works, with a warning, so that ``make serve``'s ``local-dev-secret`` does.

No log line, error or exception made here carries a secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from handler import secrets_manager
from handler.observability import logger

MIN_LENGTH = 32
# How long a read of the secret is trusted: a rotation reaches every warm container within this.
MAX_AGE_SECONDS = secrets_manager.MAX_AGE_SECONDS
# After a failed read, the last good value is used for this long before Secrets Manager is asked again,
# so that an outage costs one slow request a minute, not every request.
RETRY_AFTER_SECONDS = 60

# Monotonic, so that a change of the wall clock neither hastens nor delays a refresh; tests replace it.
_clock = time.monotonic


@dataclass
class _Read:
    arn: str = ""
    secrets: tuple[str, ...] = ()
    refresh_at: float = 0.0


_last = _Read()
_lock = threading.Lock()


def secrets() -> tuple[str, ...]:
    """The secrets accepted now, newest first as configured; empty when there are none."""
    arn = settings.ATHM_WEBHOOK_SECRET_ARN
    if arn:
        return _from_secrets_manager(arn)
    return _usable(parse(settings.ATHM_WEBHOOK_SECRET), settings.IN_LAMBDA)


def matches(candidate: str) -> bool:
    """Whether ``candidate`` is one of the accepted secrets.

    Every secret is compared, with no early exit, and the comparison is of SHA-256 digests, which all have
    one length: the time taken says nothing about which secret matched, how much of one did, or how long
    any of them is.
    """
    given = _digest(candidate)
    found = False
    for secret in secrets():
        found |= hmac.compare_digest(given, _digest(secret))
    return found


def check_at_start() -> None:
    """Refuse the cold start (``ImproperlyConfigured``) in Lambda without a secret, or with one shorter than
    ``MIN_LENGTH``. Outside Lambda only warn about a short one; there, a missing secret means 404s."""
    arn = settings.ATHM_WEBHOOK_SECRET_ARN
    configured = parse(secrets_manager.read(arn) if arn else settings.ATHM_WEBHOOK_SECRET)
    source = "The Secrets Manager secret named by ATHM_WEBHOOK_SECRET_ARN" if arn else "ATHM_WEBHOOK_SECRET"
    if settings.IN_LAMBDA:
        if not configured:
            raise ImproperlyConfigured(
                f"{source} is not set: refusing to start a listener that would accept anonymous webhooks."
            )
        short = [position for position, secret in enumerate(configured, 1) if len(secret) < MIN_LENGTH]
        if short:
            # Positions only: the error reaches the function's log, and the secret must not.
            raise ImproperlyConfigured(
                f"{source} holds a secret shorter than {MIN_LENGTH} characters (number "
                f"{', '.join(map(str, short))} of {len(configured)}): refusing to start a listener whose URL "
                "can be guessed. `athm new_secret` makes a good one."
            )
    secrets()  # the warm-up: the first webhook reads nothing, and a short local secret is warned about now


def parse(value: str) -> tuple[str, ...]:
    """``"NEW,OLD"`` -> ``("NEW", "OLD")``: blanks around and empty parts are dropped. The one reader of a
    comma-separated webhook secret, from the environment or from Secrets Manager."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def reset() -> None:
    """Forget what was read, the clients and the warnings given (for tests)."""
    global _last
    with _lock:
        _last = _Read()
    secrets_manager.reset()
    _usable.cache_clear()


def expire() -> None:
    """Have the next :func:`secrets` read the secret again (after a SnapStart restore), keeping what was
    read as the value to fall back on if that read fails."""
    with _lock:
        _last.refresh_at = 0.0


def _from_secrets_manager(arn: str) -> tuple[str, ...]:
    global _last
    with _lock:
        now = _clock()
        known = _last.arn == arn
        if known and now < _last.refresh_at:
            return _last.secrets
        try:
            # The first read takes the cold start's from secrets_manager's cache; later ones ask afresh.
            value = secrets_manager.read(arn, fresh=known)
        except Exception as exc:  # any failure at all: the last good value beats refusing every webhook
            if not known:
                raise  # nothing read before, nothing to fall back on: the cold start fails on this
            logger.warning(
                "could not read the webhook secret from Secrets Manager; the last one read stays in use",
                extra={
                    "error_type": type(exc.__context__ or exc).__name__,
                    "retry_in_seconds": RETRY_AFTER_SECONDS,
                },
            )
            _last.refresh_at = now + RETRY_AFTER_SECONDS
            return _last.secrets
        usable = _usable(parse(value), settings.IN_LAMBDA)
        if not usable and known and _last.secrets:
            logger.error(
                "the webhook secret read from Secrets Manager holds no usable secret; the last one read "
                "stays in use"
            )
            usable = _last.secrets
        _last = _Read(arn=arn, secrets=usable, refresh_at=now + MAX_AGE_SECONDS)
        return usable


@functools.lru_cache(maxsize=16)
def _usable(configured: tuple[str, ...], in_lambda: bool) -> tuple[str, ...]:
    """The secrets that may be used. Cached, so each distinct value is judged (and logged about) once."""
    short = sum(len(secret) < MIN_LENGTH for secret in configured)
    if not short:
        return configured
    if not in_lambda:
        logger.warning(
            f"a webhook secret is shorter than {MIN_LENGTH} characters: accepted outside Lambda only; "
            "use `athm new_secret` for a deployed listener",
        )
        return configured
    logger.error(
        f"ignoring webhook secrets shorter than {MIN_LENGTH} characters; the others are still accepted",
        extra={"ignored": short, "accepted": len(configured) - short},
    )
    return tuple(secret for secret in configured if len(secret) >= MIN_LENGTH)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
