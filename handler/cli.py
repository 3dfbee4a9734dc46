"""The ``athm`` command: Django's management command line with ``handler.settings`` preset.

``athm migrate``, ``athm serve``, ``athm invoke EVENT.json``, ``athm createsuperuser`` (with ATHM_ADMIN=1)
and every other Django command.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
