"""Django app configuration for the Lambda edge: connects the SNS publisher to the outbox."""

from django.apps import AppConfig


class HandlerConfig(AppConfig):
    name = "handler"
    verbose_name = "ATH Móvil Lambda edge"

    def ready(self) -> None:
        from athm_core import outbox
        from handler import publisher

        # Without a topic the outbox stays off, nothing is written, and this receiver is never called.
        outbox.messages_committed.connect(publisher.publish_committed, dispatch_uid="athm-sns-publisher")
