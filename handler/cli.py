"""The ``athm`` command: Django's management command line with ``handler.settings`` preset, booted like
every Lambda function (``handler.boot``: Django set up, the merchant's ``ATHM_RECEIVERS`` imported), so
that ``athm reprocess``, ``athm reconcile`` and ``athm redispatch`` reach the same receivers.

``athm migrate``, ``athm serve``, ``athm invoke EVENT.json``, ``athm createsuperuser`` (with ATHM_ADMIN=1)
and every other Django command.
"""

import os
import sys

# Commands whose changes or deliveries reach the receivers: without ATHM_RECEIVERS, none would hear them.
_ANNOUNCING = {"reprocess", "reconcile", "redispatch", "relay"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")
    import handler.boot  # Django set up and the receivers imported

    handler.boot.ready()  # a command is no Lambda set-up: the collector works as usual

    from django.conf import settings
    from django.core.management import execute_from_command_line

    if len(sys.argv) > 1 and sys.argv[1] in _ANNOUNCING and not settings.ATHM_RECEIVERS:
        print(
            "athm: ATHM_RECEIVERS is not set, so no receiver of yours is loaded: the changes this command "
            "makes are announced to none of them, and their pending notices cannot be delivered from here. "
            "Set ATHM_RECEIVERS (and PYTHONPATH to your receivers' code) as the functions have them, unless "
            "you have no receivers.",
            file=sys.stderr,
        )
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
