"""``athm register_webhook URL``: subscribe the deployed listener URL to ATH Móvil's webhook events.

What the ATH Business app's Settings > Development > Webhooks screen does, from a shell or a deploy script.
Everything is checked before anything is sent: ATH Móvil posts only to HTTPS with a valid certificate, and
one registration replaces the last, so a wrong URL or event list silently stops the deliveries.

The listener URL holds the webhook secret and the private token is a credential: neither is printed. The
private token comes from ``ATHM_PRIVATE_TOKEN`` or a hidden prompt, never from an option, which would leave
it in shell history and in ``ps``.
"""

import getpass
import json
import sys
import urllib.parse

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.urls import Resolver404, resolve

from athm_core.ath import client
from athm_core.conf import athm_settings

MASK = "********"
# The Lambda handler's listener path; a project of your own may route its view anywhere.
_WEBHOOK_PATH = "/webhook/"
# A secret this long keeps plenty unseen after its first four characters, which tell secrets apart. A last
# path segment this long, in a URL without /webhook/, is taken for a secret too.
_SHOWN_PREFIX_FROM = 16


class Command(BaseCommand):
    help = (
        "Register the listener URL (https://.../webhook/SECRET) with ATH Móvil for the chosen events; the "
        "events left out are unsubscribed. Tokens: ATHM_PUBLIC_TOKEN (or --public-token) and "
        "ATHM_PRIVATE_TOKEN (or a hidden prompt in a terminal)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "url",
            help="the listener's HTTPS URL, e.g. https://ID.execute-api.REGION.amazonaws.com/webhook/SECRET",
        )
        parser.add_argument(
            "--events",
            action="append",
            metavar="NAME[,NAME...]",
            help="events to subscribe to, comma-separated or repeated; the others are unsubscribed "
            f"(default all: {', '.join(client.WEBHOOK_EVENTS)})",
        )
        parser.add_argument("--public-token", help="ATH Móvil's public token (default: ATHM_PUBLIC_TOKEN)")
        parser.add_argument(
            "--dry-run", action="store_true", help="print the request (private token masked) and send nothing"
        )

    def handle(self, *args, url, events, public_token, dry_run, **options):
        url = url.strip()
        shown = mask_listener_url(url)
        check_listener_url(url, shown)
        chosen = parse_events(events)
        if not _routed_here(url):
            self.stderr.write(
                f"warning: {shown} matches no URL of this project (the Lambda handler listens at "
                "/webhook/<secret>): ATH Móvil's deliveries there would get 404"
            )
        public_token = (public_token or athm_settings.ATHM_PUBLIC_TOKEN).strip()
        if not public_token:
            raise CommandError(
                "ATH Móvil's public token is missing: set ATHM_PUBLIC_TOKEN or pass --public-token "
                "(ATH Business app: Settings > Development)"
            )
        private_token = _private_token()

        if dry_run:
            body = client.webhook_request(shown, chosen, public_token=public_token, private_token=MASK)
            self.stdout.write(f"would POST {client.endpoint(client.WEBHOOK_PATH)}")
            self.stdout.write(json.dumps(body, indent=2, ensure_ascii=False))
            self.stdout.write("dry run: nothing was sent")
            return

        try:
            client.register_webhook(
                url, events=chosen, public_token=public_token, private_token=private_token
            )
        except (client.AthmApiError, ImproperlyConfigured) as exc:
            raise CommandError(f"could not register {shown}: {_hide(str(exc), url, shown)}") from None
        left_out = [name for name in client.WEBHOOK_EVENTS if name not in chosen]
        self.stdout.write(f"registered {shown} with ATH Móvil")
        self.stdout.write(f"  subscribed: {', '.join(chosen)}")
        if left_out:
            self.stdout.write(f"  not subscribed: {', '.join(left_out)}")


def check_listener_url(url: str, shown: str) -> None:
    """Refuse a URL that ATH Móvil could not deliver to, before anything is sent."""
    if any(char.isspace() or ord(char) < 32 for char in url):
        raise CommandError("the listener URL must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https":
        raise CommandError(
            f"ATH Móvil delivers only to HTTPS listeners with a valid certificate: {shown} is not https://"
        )
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise CommandError(f"the listener URL has an invalid port: {shown}") from None
    if not host:
        raise CommandError(f"the listener URL has no host: {shown}")


def parse_events(values: list[str] | None) -> list[str]:
    """The chosen event names, in ATH Móvil's order; all six when none were named."""
    if values is None:
        return list(client.WEBHOOK_EVENTS)
    names = {name.strip().lower() for value in values for name in value.split(",") if name.strip()}
    valid = ", ".join(client.WEBHOOK_EVENTS)
    if not names:
        raise CommandError(f"--events names no event; valid events: {valid}")
    unknown = sorted(names - client.WEBHOOK_EVENTS.keys())
    if unknown:
        raise CommandError(f"unknown event {', '.join(unknown)}; valid events: {valid}")
    return [name for name in client.WEBHOOK_EVENTS if name in names]


def mask_listener_url(url: str) -> str:
    """``url`` fit to print: the secret cut to ``abcd…``, no credentials, no query.

    The secret is what follows the first /webhook/ (the Lambda handler's listener), or else a last path
    segment of 16 characters or more (a view of your own at a secret path)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    secret = _secret_of(url)
    if secret:
        start = len(path) - len(secret)
        path = path[:start] + (secret[:4] if len(secret) >= _SHOWN_PREFIX_FROM else "") + "…"
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{path}" + ("?…" if parts.query else "")


def _secret_of(url: str) -> str:
    """The secret part of the path, at its end: see :func:`mask_listener_url`; ``""`` when there is none."""
    path = urllib.parse.urlsplit(url).path
    _, found, secret = path.partition(_WEBHOOK_PATH)
    if found:
        return secret
    last = path.rstrip("/").rpartition("/")[2]
    return path[path.rindex(last) :] if len(last) >= _SHOWN_PREFIX_FROM else ""


def _routed_here(url: str) -> bool:
    """Whether this project answers at ``url``'s path (the handler's /webhook/, behind any base path)."""
    path = urllib.parse.urlsplit(url).path
    if _WEBHOOK_PATH in path:
        return True
    try:
        resolve(path)
    except Resolver404:
        return False
    except Exception:  # no URLconf to ask (a project without ROOT_URLCONF): nothing to warn about
        return True
    return True


def _hide(text: str, url: str, shown: str) -> str:
    # ATH Móvil's error message may quote the listener URL back, secret and all.
    text = text.replace(url, shown)
    secret = _secret_of(url)
    return text.replace(secret, "…") if secret else text


def _private_token() -> str:
    token = athm_settings.ATHM_PRIVATE_TOKEN
    if not token and sys.stdin is not None and sys.stdin.isatty():
        try:
            token = getpass.getpass("ATH Móvil private token (input hidden): ").strip()
        except EOFError:
            token = ""
    if not token:
        raise CommandError(
            "ATH Móvil's private token is missing: set ATHM_PRIVATE_TOKEN (ATH Business app: Settings > "
            "Development), or run this in a terminal to be asked for it. It is not accepted as an option, "
            "which would leave it in shell history and in ps."
        )
    return token
