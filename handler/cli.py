"""The ``athm`` command: Django's management command line with ``handler.settings`` preset, booted like
every Lambda function (``handler.boot``: Django set up, the merchant's ``ATHM_RECEIVERS`` imported), so
that ``athm reprocess``, ``athm reconcile`` and ``athm redispatch`` reach the same receivers.

``athm migrate``, ``athm serve``, ``athm invoke EVENT.json``, ``athm createsuperuser`` (with ATHM_ADMIN=1)
and every other Django command.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")
    import handler.boot  # noqa: F401 - Django set up and the receivers imported

    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
