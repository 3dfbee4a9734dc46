"""``athm serve``: the Lambda function behind a local HTTP server, as ``sam local start-api`` runs it."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve the webhook function on 127.0.0.1, turning each request into an API Gateway event."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")

    def handle(self, *args, **options):
        from handler.observability import console_logs

        with console_logs():  # readable lines, and no metric documents, from the function's start on
            self.serve(**options)

    def check_tables(self) -> None:
        """Refuse to serve the admin without its tables (every login would be a 500), and say, in this
        project's words, when other migrations are not applied (Django's warning names manage.py)."""
        from django.conf import settings

        from handler.cli import ADMIN_APP_LABELS, NO_ADMIN_TABLES, unapplied_migrations

        plan = unapplied_migrations()
        apps = sorted(set(plan))
        if settings.ATHM_ADMIN and ADMIN_APP_LABELS.intersection(apps):
            raise CommandError(NO_ADMIN_TABLES.format(command="serve").removeprefix("athm: "))
        if plan:
            self.stderr.write(
                f"{len(plan)} migration(s) of {', '.join(apps)} not applied to this database:"
                " run `athm migrate`"
            )

    def serve(self, *, host, port, **options):
        from handler import webhook_secrets
        from handler.app import lambda_handler
        from handler.local import make_server, no_secret_warning

        self.check_tables()
        server = make_server(lambda_handler, host, port)
        base = f"http://{host}:{server.server_port}"
        self.stdout.write(f"Serving the ATH Móvil webhook function on {base} (Ctrl-C stops it)")
        self.stdout.write(f"  GET  {base}/health")
        secrets = webhook_secrets.secrets()
        if secrets:
            # Masked: a terminal's scrollback is no place for it. The rest is ATHM_WEBHOOK_SECRET's value.
            self.stdout.write(
                f"  POST {base}/webhook/{secrets[0][:4]}…  (the rest: ATHM_WEBHOOK_SECRET's value)"
            )
        else:
            self.stderr.write(no_secret_warning())
        from django.conf import settings

        if settings.ATHM_ADMIN:
            self.stdout.write(
                f"  Admin:    {base}/admin/  (log in with a user made by `athm createsuperuser`)"
            )
            self.stdout.write(
                f"  Overview: {base}/admin/overview/  (the latest payments, refunds and webhooks)"
            )
        else:
            self.stdout.write(
                "  The admin (your payments in a browser) is off: ATHM_ADMIN=1 athm serve turns it on"
            )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
