"""``athm invoke EVENT.json``: one invocation of the Lambda function, as ``sam local invoke`` makes it."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Invoke the webhook function once with an API Gateway event read from a JSON file ('-' for stdin)."

    def add_arguments(self, parser):
        parser.add_argument(
            "event", help="API Gateway event (HTTP API 2.0 or REST 1.0), e.g. events/webhook.json"
        )

    def handle(self, *args, **options):
        from handler.observability import console_logs

        with console_logs():  # readable lines, and no metric documents, from the function's start on
            self.invoke(**options)

    def invoke(self, *, event, **options):
        from handler import webhook_secrets
        from handler.app import lambda_handler
        from handler.local import invoke, load_event, no_secret_warning

        try:
            payload = json.load(sys.stdin) if event == "-" else load_event(event)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the event: {exc}") from exc
        in_path = _path_secret(payload)
        if not webhook_secrets.secrets():
            # The sample events under events/ post to the secret `make serve` uses.
            self.stderr.write(no_secret_warning(example=in_path or ""))
        elif in_path is not None and not webhook_secrets.matches(in_path):
            # Masked like serve's banner: the event file holds it whole, for whoever needs to compare.
            self.stderr.write(
                f"The event posts to /webhook/{in_path[:4]}…, which is not a secret this function accepts"
                " (ATHM_WEBHOOK_SECRET): the answer is 404. Set ATHM_WEBHOOK_SECRET to the event's, or"
                " edit the event's path."
            )
        response = invoke(lambda_handler, payload)
        self.stdout.write(json.dumps(response, indent=2, ensure_ascii=False))


def _path_secret(event: dict) -> str | None:
    """The secret segment of an event's /webhook/<secret> path, if it has one."""
    path = str(event.get("rawPath") or event.get("path") or "")
    _, found, rest = path.partition("/webhook/")
    return rest.split("/")[0] if found else None
