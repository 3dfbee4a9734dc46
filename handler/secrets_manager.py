"""Secrets Manager, read in one place: the webhook secret, the database credentials, the private token.

Two ways to Secrets Manager, chosen by the environment at each read:

- **Through the AWS Parameters and Secrets Lambda Extension**, when ``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``
  is set (``template.yaml`` sets it, with the extension's layer, when ``SecretsExtensionLayerArn`` is
  given) and so is ``AWS_SESSION_TOKEN`` (not under SnapStart):
  ``GET http://localhost:PORT/secretsmanager/get?secretId=ARN`` with the header
  ``X-Aws-Parameters-Secrets-Token`` (the function's ``AWS_SESSION_TOKEN``), which answers with
  GetSecretValue's JSON. The standard library's ``http.client`` makes the call, so neither boto3 nor
  Powertools' parameters utility (which imports boto3) is ever imported: that is the point, a cold start
  without boto3's import and a client's set-up. A try waits ``_TIMEOUT`` seconds at most; after a
  connection refused or dropped (the extension not listening yet) or a 5xx/429 answer, a second one.
  A failure (:class:`ExtensionError`, naming the secret's ARN and the HTTP status or the error's type) is
  logged as a warning and the secret is read with boto3 as below: AWS documents the extension as callable
  only once the function is invoked, not while a cold start sets up (when the settings, the webhook secret
  and the private token are read), so a set-up that reaches it too early still starts, at boto3's cost.
- **Otherwise** Powertools' ``SecretsProvider`` over the container's one Secrets Manager client per region
  (``handler.aws``), with bounded waits (2 s to connect, 2 s to read, two attempts); it raises Powertools'
  ``GetParameterError``. boto3 is imported on the first read only, so a container configured without
  secrets never loads it.

Either way a read may happen during a webhook and gives up long before the function's timeout, and a value
is cached here for ``MAX_AGE_SECONDS``; ``fresh=True`` reads it again now (the database backends after a
refused password, the webhook secret every five minutes), which is how a rotation reaches a warm container.
For ``fresh`` to mean fresh through the extension too, ``template.yaml`` turns the extension's own cache off
(``PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=false``): the cache here already keeps every read for five
minutes, and with the extension's cache on a read could return a value up to its ``SECRETS_MANAGER_TTL``
older. (No query parameter that would make the extension bypass its cache is relied on: none could be
confirmed in its documentation.)

Who reads what, and when: ``handler.settings`` the database secret (``DB_SECRET_ARN``) and the private
token (``ATHM_PRIVATE_TOKEN_SECRET_ARN``) as the container starts; the database backends in
``handler.rds`` the database secret for each new connection; ``handler.webhook_secrets`` the webhook
secret (``ATHM_WEBHOOK_SECRET_ARN``) at start and every few minutes. This module runs before Django's
settings exist (the settings call it), so it reads the two variables it needs, the extension's port and the
session token, from the environment itself, as boto3 reads its own. Nothing here logs but a fall-back
to boto3 (the ARN and the HTTP status or error type), and no error made here carries a secret's value.
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from handler import aws

# How long a read is trusted: a rotation reaches every warm container within this.
MAX_AGE_SECONDS = 300
_CONNECT_TIMEOUT = 2
_READ_TIMEOUT = 2
_ATTEMPTS = 2

# The extension: how it is asked, and where (its port: PARAMETERS_SECRETS_EXTENSION_HTTP_PORT).
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
_HOST = "localhost"
# Seconds a try through the extension may take, to connect and then for each read of its answer.
_TIMEOUT = 2
# Before the second try, after a connection refused or dropped, or a 5xx/429 answer.
_PAUSE_SECONDS = 0.1

_log = logging.getLogger(__name__)
# Monotonic, so that a change of the wall clock neither hastens nor delays a refresh; tests replace it.
_clock = time.monotonic
# What was read through the extension: ARN -> (when, value).
_read: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class ExtensionError(Exception):
    """A secret could not be read through the Parameters and Secrets extension. The message names the
    secret's ARN and the HTTP status or the error's type; never the value, nor what the extension said."""


def read(arn: str, *, fresh: bool = False) -> str:
    """The value of the secret ``arn`` (a plain string), through the extension when it is configured and
    answers, else with boto3. Raises Powertools' ``GetParameterError`` when boto3 cannot read it either."""
    if _extension_port() is not None:
        try:
            return _through_extension(arn, fresh=fresh)
        except ExtensionError as exc:
            _falling_back(arn, exc)
    value = provider(_region(arn)).get(arn, max_age=MAX_AGE_SECONDS, force_fetch=fresh)
    return value.decode() if isinstance(value, bytes) else str(value)


def database_secret(arn: str, *, fresh: bool = False) -> dict[str, Any]:
    """The database secret's JSON: ``username`` and ``password``, and for a classic RDS secret ``engine``,
    ``host``, ``port`` and ``dbname``. Raises ``ImproperlyConfigured`` for a secret without a password."""
    value: Any = None
    through_extension = False
    if _extension_port() is not None:
        try:
            value, through_extension = _json(_through_extension(arn, fresh=fresh)), True
        except ExtensionError as exc:
            _falling_back(arn, exc)
    if not through_extension:
        value = provider(_region(arn)).get(arn, max_age=MAX_AGE_SECONDS, force_fetch=fresh, transform="json")
    if not isinstance(value, dict) or "password" not in value:
        raise ImproperlyConfigured(
            f"DB_SECRET_ARN {arn} is not a database secret (not a JSON object with a 'password' key)"
        )
    return value


def _falling_back(arn: str, error: ExtensionError) -> None:
    # AWS documents the extension as callable in the INVOKE phase only; during a cold start's set-up (and
    # under load, by some reports) it may refuse. A start never fails for it: boto3 reads the secret. What
    # the extension gave before is forgotten, so that the next read does not return a value older than
    # this one (a rotated password).
    with _lock:
        _read.pop(arn, None)
    _log.warning("%s; reading the secret with boto3", error, extra={"error": str(error)})


@functools.cache
def provider(region: str | None) -> Any:
    """The container's one Powertools ``SecretsProvider`` for ``region`` (``None``: the environment's), over
    the container's one Secrets Manager client (``handler.aws``)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    client = aws.client(
        "secretsmanager",
        region,
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
        attempts=_ATTEMPTS,
    )
    return SecretsProvider(boto3_client=client)


def reset() -> None:
    """Forget the clients and every value read (after a SnapStart restore; for tests)."""
    with _lock:
        _read.clear()
    provider.cache_clear()
    aws.client.cache_clear()


def _region(arn: str) -> str | None:
    # A full ARN names its region; a bare secret name leaves it to the environment (AWS_REGION).
    parts = arn.split(":")
    return parts[3] if len(parts) > 6 and parts[0] == "arn" else None


# --- through the Parameters and Secrets extension --------------------------------------------------------


def _json(text: str) -> Any:
    """``text`` read as JSON, or ``None``. Nothing of the error is kept: it would quote the value."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _extension_port() -> int | None:
    """The extension's port when ``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`` is set and the function has the
    session token the extension requires, else ``None`` (boto3 reads the secret). Under SnapStart, Lambda
    gives a function container credentials instead of ``AWS_SESSION_TOKEN``: the extension cannot be asked
    there, and boto3 (whose credential chain reads those) is used."""
    configured = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "").strip()
    if not configured:
        return None
    if not configured.isdigit() or not 0 < int(configured) < 65536:
        raise ImproperlyConfigured(
            f"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT is not a port number: {configured!r}"
        )
    if not os.environ.get("AWS_SESSION_TOKEN"):
        return None
    return int(configured)


def _through_extension(arn: str, *, fresh: bool) -> str:
    now = _clock()
    with _lock:
        cached = _read.get(arn)
    if cached and not fresh and now - cached[0] < MAX_AGE_SECONDS:
        return cached[1]
    value = _ask_extension(arn)
    with _lock:
        _read[arn] = (now, value)
    return value


def _ask_extension(arn: str) -> str:
    """One secret's value from the extension: two tries at most, each bounded by ``_TIMEOUT``."""
    port = _extension_port()
    token = os.environ["AWS_SESSION_TOKEN"]  # set: _extension_port() said so
    failure = f"could not read the secret {arn} through the Parameters and Secrets extension"
    path = "/secretsmanager/get?secretId=" + urllib.parse.quote(arn, safe="")
    for attempt in range(1, _ATTEMPTS + 1):
        last = attempt == _ATTEMPTS
        garbled = ""
        connection = http.client.HTTPConnection(_HOST, port, timeout=_TIMEOUT)
        try:
            connection.request("GET", path, headers={TOKEN_HEADER: token})
            answer = connection.getresponse()
            status, body = answer.status, answer.read()
        except TimeoutError:
            # ``from None``: a traceback shows this message only; the cause stays in ``__context__``.
            raise ExtensionError(f"{failure}: TimeoutError") from None
        except OSError as exc:  # refused, reset, closed without an answer: not listening (yet)
            if last:
                raise ExtensionError(f"{failure}: {type(exc).__name__}") from None
            time.sleep(_PAUSE_SECONDS)
            continue
        except http.client.HTTPException as exc:  # an answer that is not HTTP, which the exception may quote
            garbled = type(exc).__name__
        finally:
            connection.close()
        if garbled:  # raised out here, so that the exception is not kept as this one's context
            raise ExtensionError(f"{failure}: {garbled}")
        if status == 200:
            return _secret_value(body, failure)
        if last or not (status >= 500 or status == 429):
            raise ExtensionError(f"{failure}: HTTP {status}")
        time.sleep(_PAUSE_SECONDS)
    raise AssertionError("unreachable")  # pragma: no cover - every last try returns or raises


def _secret_value(body: bytes, failure: str) -> str:
    """``SecretString`` from GetSecretValue's JSON, or ``SecretBinary`` (base64) read as UTF-8."""
    try:
        answer = json.loads(body)
        if isinstance(answer, dict) and isinstance(answer.get("SecretString"), str):
            return answer["SecretString"]
        if isinstance(answer, dict) and isinstance(answer.get("SecretBinary"), str):
            return base64.b64decode(answer["SecretBinary"], validate=True).decode()
    except (ValueError, binascii.Error):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        pass
    raise ExtensionError(f"{failure}: its answer holds no SecretString or SecretBinary")
