"""Django settings for the Lambda function and for local runs: the environment, read once, mapped onto
Django's settings and athm_core's (``athm_core.conf``).

Values only: a secret named by an ARN is read by the module that owns Secrets Manager
(``handler.secrets_manager``). Every variable is listed in docs/settings.md. Nothing else in the project reads
the environment for settings, but for what ``handler.secrets_manager`` needs before these settings exist
(the Parameters and Secrets extension's port, and Lambda's session token to ask it with).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from athm_core import conf as athm_core_conf
from handler import secrets_manager

IN_LAMBDA = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
DEFAULT_SQLITE_PATH = Path.cwd() / "athm.sqlite3"

_SECRET_BACKENDS = {
    "django.db.backends.postgresql": "handler.rds.postgresql",
    "django.db.backends.mysql": "handler.rds.mysql",
}
# RDS secrets name their engine; Django names its backends.
_SECRET_ENGINES = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "aurora-postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
}


def _list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _athm_core_setting(name: str) -> Any:
    """The environment variable ``name``, or athm_core's default for the setting of that name."""
    return os.environ.get(name, "").strip() or athm_core_conf.DEFAULTS[name]


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def database_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``default`` database from ``DATABASE_URL`` and/or ``DB_SECRET_ARN``, or a local SQLite file.

    An RDS-managed secret holds only ``username`` and ``password``; classic RDS secrets also hold
    ``engine``, ``host``, ``port`` and ``dbname``. The URL names what the secret does not (or points at an
    RDS Proxy); the secret's credentials always win.
    """
    url = env.get("DATABASE_URL", "").strip()
    secret_arn = env.get("DB_SECRET_ARN", "").strip()
    secret: dict[str, Any] = secrets_manager.database_secret(secret_arn) if secret_arn else {}
    if not url and secret:
        url = _url_from_secret(secret)
    if not url:
        if IN_LAMBDA:
            raise ImproperlyConfigured(
                "Set DATABASE_URL or DB_SECRET_ARN: a Lambda function cannot keep its data in SQLite."
            )
        url = f"sqlite:///{DEFAULT_SQLITE_PATH}"

    timeout = int(env.get("DB_CONNECT_TIMEOUT", "5"))
    # Persistent connections, checked before reuse: a warm Lambda container keeps its connection.
    config = dj_database_url.parse(url, conn_max_age=None, conn_health_checks=True)
    engine = config["ENGINE"]
    if secret:
        config["USER"] = secret.get("username", config.get("USER", ""))
        config["PASSWORD"] = secret["password"]
        if engine not in _SECRET_BACKENDS:
            raise ImproperlyConfigured(f"DB_SECRET_ARN works with PostgreSQL and MySQL/MariaDB, not {engine}")
        # These backends read the secret again for each new connection, so a rotation never locks us out.
        config["ENGINE"] = _SECRET_BACKENDS[engine]
        config["SECRET_ARN"] = secret_arn
    options = config.setdefault("OPTIONS", {})
    if engine == "django.db.backends.sqlite3":
        # One writer at a time from the first statement: concurrent deliveries queue instead of failing.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", 20)
        options.setdefault("init_command", "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL")
    elif engine == "django.db.backends.postgresql":
        if importlib.util.find_spec("psycopg") is None:  # looked for, not imported
            raise ImproperlyConfigured(
                "A PostgreSQL DATABASE_URL needs psycopg: pip install -e '.[postgres]' in the project"
                " (make test installs it), or pip install 'athm-lambda[postgres]'"
            )
        options.setdefault("connect_timeout", timeout)
    elif engine == "django.db.backends.mysql":
        _install_pymysql()
        options.setdefault("charset", "utf8mb4")
        options.setdefault("connect_timeout", timeout)
        config["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    return config


def _url_from_secret(secret: dict[str, Any]) -> str:
    engine = _SECRET_ENGINES.get(str(secret.get("engine", "")).lower())
    if not engine or not secret.get("host"):
        raise ImproperlyConfigured(
            "DB_SECRET_ARN names a secret without engine and host (an RDS-managed secret): "
            "set DATABASE_URL too, without the password, e.g. postgres://db.example.internal:5432/shop"
        )
    port = f":{secret['port']}" if secret.get("port") else ""
    return f"{engine}://{secret['host']}{port}/{secret.get('dbname', '')}"


def _install_pymysql() -> None:
    """Use PyMySQL (pure Python, so it packages for any Lambda architecture) unless mysqlclient is there."""
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        try:
            import pymysql
        except ImportError:
            raise ImproperlyConfigured(
                "A MySQL/MariaDB DATABASE_URL needs PyMySQL: pip install -e '.[mysql]' in the project"
                " (make test installs it), or pip install 'athm-lambda[mysql]'"
            ) from None
        pymysql.install_as_MySQLdb()


# --- Django --------------------------------------------------------------------------------------------

# Nothing here signs anything for the webhook; the admin (local use) needs a key that lasts the process.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = _list("ATHM_ALLOWED_HOSTS") or ["*"]
ROOT_URLCONF = "handler.urls"
USE_TZ = True
TIME_ZONE = "America/Puerto_Rico"
USE_I18N = False

DATABASES = {"default": database_settings(os.environ)}

# Receivers that have models of their own list their Django apps here. handler comes first: its `relay`
# command (notices, then SNS) extends athm_core's, and the first app's command of a name wins.
INSTALLED_APPS = ["handler", "athm_core", *_list("ATHM_INSTALLED_APPS")]
MIDDLEWARE: list[str] = []
TEMPLATES: list[dict[str, Any]] = []

# The read-only admin and its overview page (handler.urls), for local use: `athm serve` with ATHM_ADMIN=1.
# `athm createsuperuser` and `athm changepassword` turn it on themselves (handler.cli).
ATHM_ADMIN = _flag("ATHM_ADMIN")
if ATHM_ADMIN:
    INSTALLED_APPS[:0] = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
    ]
    # The admin's CSS, scripts and pictures, found in the apps' static folders and served by handler.urls
    # (nothing to collect): DEBUG is off, so Django would serve none of them by itself.
    STATIC_URL = "static/"
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        # Django and Mangum name the request path in their logs, and the path holds the webhook secret.
        "django.request": {"handlers": [], "level": "CRITICAL", "propagate": False},
        "django.server": {"handlers": [], "level": "CRITICAL", "propagate": False},
        # send_robust() logs a failing receiver's exception text, which may quote customer data;
        # athm_core.dispatch records the failure on the event instead and logs its type.
        "django.dispatch": {"handlers": [], "level": "CRITICAL", "propagate": False},
        "mangum": {"level": "WARNING"},
        # At DEBUG botocore logs whole requests and responses: the SNS message, and the database secret.
        "botocore": {"level": "INFO"},
        "boto3": {"level": "INFO"},
    },
}

# --- the listener ----------------------------------------------------------------------------------

# The listener URL's secret (POST /webhook/<secret>): the value of the Secrets Manager secret named by
# ATHM_WEBHOOK_SECRET_ARN (as template.yaml deploys it), else ATHM_WEBHOOK_SECRET; comma-separated during a
# rotation. handler.webhook_secrets reads, checks and compares them; the webhook function (handler.app)
# refuses to start in Lambda without one.
ATHM_WEBHOOK_SECRET_ARN = os.environ.get("ATHM_WEBHOOK_SECRET_ARN", "").strip()
ATHM_WEBHOOK_SECRET = os.environ.get("ATHM_WEBHOOK_SECRET", "")
# The merchant's receiver modules, imported once per container by handler.boot.
ATHM_RECEIVERS = tuple(_list("ATHM_RECEIVERS"))
ATHM_MAX_BODY_BYTES = int(os.environ.get("ATHM_MAX_BODY_BYTES", "65536"))
# A custom domain's base path (API mapping) that API Gateway leaves in the path, e.g. /athm for
# https://pay.example.com/athm/webhook/<secret>; "/" is none. Named stages need no setting (handler.asgi).
ATHM_API_GATEWAY_BASE_PATH = "/" + os.environ.get("ATHM_API_GATEWAY_BASE_PATH", "").strip().strip("/")

# Powertools reads its own POWERTOOLS_* variables too (log level, disabling metrics).
ATHM_SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "athm-webhooks")
ATHM_METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "AthMovil")
# X-Ray tracing runs where Powertools would trace: in Lambda, unless POWERTOOLS_TRACE_DISABLED.
ATHM_TRACING = bool(os.environ.get("LAMBDA_TASK_ROOT")) and not _flag("POWERTOOLS_TRACE_DISABLED")

# --- SNS: the outbox ----------------------------------------------------------------------------------

# Each business event is written to the outbox with its change and published here; unset, nothing is.
ATHM_SNS_TOPIC_ARN = os.environ.get("ATHM_SNS_TOPIC_ARN", "").strip()
_TOPIC_ARN = re.compile(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]{1,256}(\.fifo)?")
if ATHM_SNS_TOPIC_ARN and not _TOPIC_ARN.fullmatch(ATHM_SNS_TOPIC_ARN):
    raise ImproperlyConfigured(
        f"ATHM_SNS_TOPIC_ARN is not an SNS topic ARN: {ATHM_SNS_TOPIC_ARN!r} "
        "(expected arn:aws:sns:REGION:ACCOUNT:NAME, NAME ending in .fifo for a FIFO topic)"
    )
ATHM_OUTBOX = bool(ATHM_SNS_TOPIC_ARN)
# Customer names, phones, emails and messages stay out of the messages unless the deployer wants them.
ATHM_OUTBOX_CUSTOMER_DATA = _flag("ATHM_SNS_CUSTOMER_DATA")

# --- ATH Móvil's API (athm_core.conf documents each) ---------------------------------------------------

# Where ATH Móvil's business API is; tests point it at a fake server on 127.0.0.1.
ATHM_API_BASE_URL = _athm_core_setting("ATHM_API_BASE_URL")
# The business's API keys (ATH Business app: Settings > Development) for the calls made to that API, such
# as `athm register_webhook`. The private token is a credential: it is never logged or printed.
ATHM_PUBLIC_TOKEN = os.environ.get("ATHM_PUBLIC_TOKEN", "").strip()
ATHM_PRIVATE_TOKEN = os.environ.get("ATHM_PRIVATE_TOKEN", "").strip()
# In Lambda (the scheduled reconciliation) the private token comes from Secrets Manager, never the env.
ATHM_PRIVATE_TOKEN_SECRET_ARN = os.environ.get("ATHM_PRIVATE_TOKEN_SECRET_ARN", "").strip()
if ATHM_PRIVATE_TOKEN_SECRET_ARN:
    ATHM_PRIVATE_TOKEN = secrets_manager.read(ATHM_PRIVATE_TOKEN_SECRET_ARN).strip()
# findPayment and refunds live on their own host.
ATHM_PAYMENTS_API_BASE_URL = _athm_core_setting("ATHM_PAYMENTS_API_BASE_URL")

# Verify each eCommerce event with ATH Móvil's findPayment before it changes a payment: on whenever the
# public token is there, unless ATHM_VERIFY turns it off.
ATHM_VERIFY = _flag("ATHM_VERIFY", default=bool(ATHM_PUBLIC_TOKEN))
if ATHM_VERIFY and not ATHM_PUBLIC_TOKEN:
    raise ImproperlyConfigured("ATHM_VERIFY is on but ATHM_PUBLIC_TOKEN is not set: findPayment needs it")
# Seconds to wait for findPayment: well under the function's timeout, which is under API Gateway's 30 s.
ATHM_VERIFY_TIMEOUT = float(_athm_core_setting("ATHM_VERIFY_TIMEOUT"))
# The check every delivery goes through (athm_core.receive): findPayment by default, or the merchant's own.
ATHM_VERIFIER = _athm_core_setting("ATHM_VERIFIER")
# Seconds after which the relay applies a delivery ATH Móvil could not verify, unverified; unset: never.
_apply_unverified_after = os.environ.get("ATHM_APPLY_UNVERIFIED_AFTER", "").strip()
ATHM_APPLY_UNVERIFIED_AFTER = float(_apply_unverified_after) if _apply_unverified_after else None
