"""Every Lambda entry point's first import (and the ``athm`` command's): Django set up, and the merchant's
receivers imported, once per container.

``import handler.boot`` (first, before anything that needs Django's apps):

1. points Django at ``handler.settings`` unless ``DJANGO_SETTINGS_MODULE`` names another, and sets it up;
2. imports each module named in ``ATHM_RECEIVERS`` (from anywhere on ``sys.path``: a layer's
   ``/opt/python``), so that every entry point that can change rows or send signals (the webhook, the
   relay, reconciliation, the migrations, the ``athm`` commands) has the same receivers; a module that
   cannot be imported fails the cold start with its name, instead of failing later, one event at a time;
3. gives athm_core's and the receivers' own log records the handler's format (JSON, with the invocation's
   correlation id), including those of modules imported later;
4. in Lambda, on MySQL/MariaDB, refuses the cold start on a database that is not utf8mb4 (the system check
   ``athm_core.E002``, one query); nothing is asked of SQLite or PostgreSQL.

In a process that Lambda's runtime started (``AWS_LAMBDA_RUNTIME_API`` is set: the runtime imports the
function's handler module, one of this package's entry points), garbage collection is off from here until
the entry point has done its set-up and calls :func:`ready`, which freezes what the set-up made (modules,
settings, clients: it lives as long as the container, and the collector need never look at it again),
turns collection back on and registers the SnapStart hooks (``handler.snapstart``). Collections during
set-up cost about 96 ms of a cold start for nothing (issue 16's measurement): nearly everything allocated
then is kept. A handler module of your own that imports this one must call :func:`ready` last, as ours
do; the ``athm`` command calls it at once. The few hundred objects that set-up left unreachable are frozen
with the rest: bounded, and cheaper than a full collection before the first request.

The linter keeps this import first (``pyproject.toml``: the ``boot`` import section).
"""

from __future__ import annotations

import gc
import os

if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
    gc.disable()  # until ready(); before the imports below, which make most of the set-up's objects

try:
    import importlib
    import logging
    from collections.abc import Iterable

    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
except BaseException:
    gc.enable()  # a start that fails (and answers, like the migration function) collects as usual
    raise


def load_receivers(modules: Iterable[str]) -> None:
    """Import each receiver module; ``ImproperlyConfigured`` names the first that cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ImproperlyConfigured(
                f"ATHM_RECEIVERS: cannot import receiver module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _boot() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")
    django.setup()
    if getattr(settings, "IN_LAMBDA", False):
        # Refused now, with the fix, rather than a 500 for the first customer message with an emoji.
        # Outside Lambda, `migrate` runs the same check, and `athm dbshell` stays usable to apply the fix.
        from athm_core.checks import require_utf8mb4

        require_utf8mb4()
    receivers = getattr(settings, "ATHM_RECEIVERS", ())
    load_receivers(receivers)

    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from handler.observability import logger

    packages = {"athm_core", *(module.split(".")[0] for module in receivers)}
    for package in packages:
        # Registered now, so that the modules imported later log through their package's configured logger.
        logging.getLogger(package)
    copy_config_to_registered_loggers(source_logger=logger, include=packages)


def ready() -> None:
    """The entry point's set-up is done: freeze what it made, collect garbage again from now on, and
    register the SnapStart hooks. Each Lambda entry point calls it last, at import; harmless anywhere."""
    from handler import snapstart

    snapstart.register()
    gc.freeze()
    gc.enable()


try:
    _boot()
except BaseException:
    gc.enable()  # a start that fails (and answers, like the migration function) collects as usual
    raise
