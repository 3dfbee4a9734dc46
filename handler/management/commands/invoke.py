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

    def handle(self, *args, event, **options):
        from handler.app import lambda_handler
        from handler.local import invoke, load_event

        try:
            payload = json.load(sys.stdin) if event == "-" else load_event(event)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the event: {exc}") from exc
        response = invoke(lambda_handler, payload)
        self.stdout.write(json.dumps(response, indent=2, ensure_ascii=False))
