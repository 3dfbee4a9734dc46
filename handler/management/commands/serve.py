"""``athm serve``: the Lambda function behind a local HTTP server, as ``sam local start-api`` runs it."""

import os

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the webhook function on 127.0.0.1, turning each request into an API Gateway event."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")

    def handle(self, *args, host, port, **options):
        # Readable logs and no metric blobs on a terminal, unless asked for.
        os.environ.setdefault("POWERTOOLS_DEV", "true")
        from handler import webhook_secrets
        from handler.app import lambda_handler
        from handler.local import make_server

        self.check_migrations()
        server = make_server(lambda_handler, host, port)
        base = f"http://{host}:{server.server_port}"
        self.stdout.write(f"Serving the ATH Móvil webhook function on {base} (Ctrl-C stops it)")
        self.stdout.write(f"  GET  {base}/health")
        if webhook_secrets.secrets():
            self.stdout.write(f"  POST {base}/webhook/$ATHM_WEBHOOK_SECRET")
        else:
            self.stdout.write(self.style.WARNING("  ATHM_WEBHOOK_SECRET is not set: every webhook gets 404"))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
