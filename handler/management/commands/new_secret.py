"""``athm new_secret``: print a fresh random webhook secret, for a new listener or a rotation.

Only the secret goes to stdout (``NEW=$(athm new_secret)``); the rotation steps go to stderr.
"""

import secrets

from django.core.management.base import BaseCommand

ROTATION = (
    'To rotate: put "NEW,OLD" into the webhook secret (aws secretsmanager put-secret-value), wait 5 minutes, '
    'register the new URL (athm register_webhook), then put "NEW" alone. docs/deploy.md, '
    '"Rotating the webhook secret", has the commands.'
)


class Command(BaseCommand):
    help = f"Print a fresh random webhook secret (48 URL-safe characters). {ROTATION}"
    # Nothing here needs the database or the app checks.
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        # 36 random bytes: 288 bits, 48 characters of [A-Za-z0-9_-], safe as a URL path segment as is.
        self.stdout.write(secrets.token_urlsafe(36))
        # Plain, not in the error colour that Django gives stderr: this is advice, not a failure.
        self.stderr.write(ROTATION, style_func=str)
