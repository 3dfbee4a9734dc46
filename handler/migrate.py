"""``handler.migrate.lambda_handler``, the migration function's entry point: ``athm migrate`` on deploy.

``template.yaml`` calls it as a CloudFormation custom resource whenever a deploy changes the code. Create
and Update run the migrations and report success, or failure with the reason, which fails the deploy and
rolls it back before the new code takes traffic. Delete changes nothing: the data outlives the stack.
Invoked directly (``sam remote invoke MigrateFunction``), it runs the migrations and returns their output.

A function that cannot start (a receiver module that cannot be imported, a MySQL/MariaDB database that is
not utf8mb4) still answers the custom resource, FAILED with the reason: without an answer, CloudFormation
would wait an hour for one. ``migrate`` runs the system checks, the database's (``athm_core.E002``) among
them, before it changes anything.
"""

from __future__ import annotations

try:
    import handler.boot  # first: Django set up and the receivers imported
except Exception as exc:  # whatever stops the start is the deploy's failure, said at once
    BOOT_FAILURE = f"the migration function could not start: {type(exc).__name__}: {exc}"
else:
    BOOT_FAILURE = ""

import io
import json
import sys
import threading
import urllib.request
from typing import Any

from django.core.management import call_command

if not BOOT_FAILURE:  # the logger needs Django's settings
    from handler.observability import logger

# CloudFormation waits an hour for an answer that never comes: answer FAILED this long before the timeout.
_MARGIN_SECONDS = 10
# CloudFormation takes at most 4 KB of answer.
_REASON_LENGTH = 1000


def migrate() -> str:
    """Run every pending migration; returns what ``migrate`` printed."""
    output = io.StringIO()
    call_command("migrate", interactive=False, no_color=True, skip_checks=False, stdout=output)
    return output.getvalue()


def _migrate_on_deploy(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "ResponseURL" not in event:
        return {"status": "migrated", "output": migrate()}
    sent: dict[str, str] = {}
    lock = threading.Lock()

    def answer(status: str, reason: str) -> None:
        with lock:  # once: either the result, or the timeout's FAILED, whichever comes first
            if not sent:
                sent.update(status=status, reason=reason)
                _answer(event, status, reason)

    timer = threading.Timer(
        max(1.0, context.get_remaining_time_in_millis() / 1000 - _MARGIN_SECONDS),
        answer,
        args=("FAILED", "the migrations ran out of time"),
    )
    timer.daemon = True
    timer.start()
    status, reason = "SUCCESS", ""
    if event["RequestType"] in ("Create", "Update"):
        try:
            output = migrate()
            logger.info("migrations applied", extra={"output": output[-_REASON_LENGTH:]})
        except Exception as exc:
            logger.exception("migrations failed")
            status, reason = "FAILED", f"migrate failed: {type(exc).__name__}: {exc}"
    timer.cancel()
    answer(status, reason)
    return sent


def _refuse_to_start(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The handler of a function that could not start: FAILED to CloudFormation, an error when invoked.
    A Delete succeeds all the same: it changes nothing, and CloudFormation sends one when it rolls back a
    failed Create or deletes the stack, which a FAILED answer would leave ROLLBACK_FAILED or DELETE_FAILED
    (a receiver module that cannot be imported, the database secret deleted first)."""
    print(BOOT_FAILURE, file=sys.stderr)
    if "ResponseURL" not in event:
        raise RuntimeError(BOOT_FAILURE)
    if event.get("RequestType") == "Delete":
        _answer(event, "SUCCESS", "nothing to undo (the function could not start: see its log)")
        return {"status": "SUCCESS"}
    _answer(event, "FAILED", BOOT_FAILURE)
    return {"status": "FAILED", "reason": BOOT_FAILURE[:_REASON_LENGTH]}


if BOOT_FAILURE:
    lambda_handler = _refuse_to_start
else:
    # The event is not logged, whatever POWERTOOLS_LOGGER_LOG_EVENT says: its ResponseURL is a pre-signed URL.
    lambda_handler = logger.inject_lambda_context(clear_state=True, log_event=False)(_migrate_on_deploy)


def _answer(event: dict[str, Any], status: str, reason: str) -> None:
    """PUT the custom resource's result to the pre-signed URL CloudFormation gave."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:_REASON_LENGTH] or "migrations applied",
            "PhysicalResourceId": event.get("PhysicalResourceId") or "athm-migrations",
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


if not BOOT_FAILURE:
    handler.boot.ready()  # last: the set-up is done, collection back on, SnapStart hooks registered
