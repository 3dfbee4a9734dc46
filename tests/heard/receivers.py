"""Receivers for the fault proofs: one that counts every notice in the ``Heard`` table, and fault receivers
that fail once, each in its own way.

Connected to all six signals of :mod:`athm_core.signals`, in this order (the order the signals call them):

- ``count``: writes a :class:`~tests.heard.models.Heard` row, every time.
- ``exit_once`` (``HEARD_EXIT_ONCE=<path>``): the first time, ends its process at once (``os._exit(3)``),
  as a Lambda container killed mid-invocation; afterwards writes its row.
- ``kill_session_once`` (``HEARD_KILL_SESSION_ONCE=<path>``): the first time, kills its own database
  session from a separate connection (``pg_terminate_backend`` / ``KILL``, like ``tests.test_faults.Killer``)
  and then writes its row, which fails: a database blip while the receivers run. Afterwards writes its row.
- ``nul_once`` (``HEARD_NUL_ONCE=<path>``): the first time, raises ``ValueError("bad\\x00byte")``;
  afterwards writes its row.

"The first time" is per marker file, across processes: the first call creates ``<path>`` with
``O_CREAT | O_EXCL`` (holding the caller's pid); every later call, in any process, finds it there. A fault
receiver is connected only when its marker path is given, and each writes rows under its own name, so
"each receiver handled each state change exactly once" is countable per receiver.

How they get connected (chosen so that the test process never keeps them by accident):

- importing this module connects them only when it is named in ``ATHM_RECEIVERS`` (the settings'
  tuple, read from the environment): what ``handler.boot`` does in a child process or an ``athm``
  subprocess started with ``ATHM_RECEIVERS=tests.heard.receivers``. The markers then come from the
  ``HEARD_*`` environment variables;
- in the test process itself, :func:`connect` (``connect(nul_once=path)``) and :func:`disconnect`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.dispatch import Signal

from athm_core.events import EventType

# Every signal of athm_core.signals, with its name.
SIGNAL_NAMES = {kind.signal: kind.signal_name for kind in EventType if kind.signal is not None}
# Each fault receiver and the environment variable that names its marker file.
FAULTS = {
    "exit_once": "HEARD_EXIT_ONCE",
    "kill_session_once": "HEARD_KILL_SESSION_ONCE",
    "nul_once": "HEARD_NUL_ONCE",
}
EXIT_CODE = 3

# The marker file of each connected fault receiver.
_markers: dict[str, str] = {}


def _heard(receiver: str, signal: Signal, payment: Any, refund: Any, notice_id: Any) -> None:
    from tests.heard.models import Heard

    Heard.objects.create(
        signal=SIGNAL_NAMES[signal],
        receiver=receiver,
        notice_id=notice_id,
        payment_id=payment.pk,
        refund_id=refund.pk if refund is not None else None,
        pid=os.getpid(),
    )


def _first_time(fault: str) -> bool:
    """Whether this is the first call of ``fault`` anywhere: creates its marker file if it is."""
    try:
        descriptor = os.open(_markers[fault], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as marker:
        marker.write(f"{os.getpid()}\n")
    return True


# --- the receivers ---------------------------------------------------------------------------------------


def count(sender, *, signal, payment, refund=None, notice_id=None, **kwargs) -> None:
    _heard("count", signal, payment, refund, notice_id)


def exit_once(sender, *, signal, payment, refund=None, notice_id=None, **kwargs) -> None:
    if _first_time("exit_once"):
        os._exit(EXIT_CODE)  # no cleanup, no rollback sent: the process is simply gone
    _heard("exit_once", signal, payment, refund, notice_id)


def kill_session_once(sender, *, signal, payment, refund=None, notice_id=None, **kwargs) -> None:
    if _first_time("kill_session_once"):
        kill_own_session()
    _heard("kill_session_once", signal, payment, refund, notice_id)


def nul_once(sender, *, signal, payment, refund=None, notice_id=None, **kwargs) -> None:
    if _first_time("nul_once"):
        raise ValueError("bad\x00byte")
    _heard("nul_once", signal, payment, refund, notice_id)


RECEIVERS = {
    "count": count,
    "exit_once": exit_once,
    "kill_session_once": kill_session_once,
    "nul_once": nul_once,
}


# --- connecting ------------------------------------------------------------------------------------------


def connect(**markers: str | os.PathLike | None) -> list[str]:
    """Connect ``count`` and, after it, each fault receiver given a marker path (``exit_once=path``...);
    returns the names connected, in order. Connecting again replaces the previous set."""
    unknown = set(markers) - set(FAULTS)
    if unknown:
        raise TypeError(f"no such fault receiver: {', '.join(sorted(unknown))}")
    disconnect()
    _markers.update({fault: str(path) for fault, path in markers.items() if path})
    names = ["count", *(fault for fault in FAULTS if fault in _markers)]
    for name in names:
        for signal in SIGNAL_NAMES:
            signal.connect(RECEIVERS[name], weak=False, dispatch_uid=f"tests.heard.{name}")
    return names


def disconnect() -> None:
    """Disconnect every receiver of this module, and forget the markers."""
    for name in RECEIVERS:
        for signal in SIGNAL_NAMES:
            signal.disconnect(dispatch_uid=f"tests.heard.{name}")
    _markers.clear()


def markers_from_environment() -> dict[str, str]:
    return {fault: os.environ[variable] for fault, variable in FAULTS.items() if os.environ.get(variable)}


# --- killing this process's own database session ---------------------------------------------------------


def kill_own_session() -> None:
    """Kill the database session of this thread's Django connection, from a separate raw connection, and
    wait until the server has ended it. The Django connection is left believing it is fine."""
    connection.ensure_connection()
    database = connection.settings_dict
    options = {"host": database["HOST"] or "127.0.0.1", "user": database["USER"]}
    if connection.vendor == "postgresql":
        import psycopg

        session = connection.connection.info.backend_pid
        with psycopg.connect(
            **options,
            port=int(database["PORT"] or 5432),
            dbname=database["NAME"],
            password=database["PASSWORD"] or None,
            autocommit=True,
        ) as killer:
            # The two-argument form waits (up to 5 s) until the backend has really gone.
            ended = killer.execute("SELECT pg_terminate_backend(%s, 5000)", [session]).fetchone()[0]
            if ended is not True:
                raise RuntimeError(f"PostgreSQL session {session} did not end")
    elif connection.vendor == "mysql":
        import pymysql

        session = connection.connection.thread_id()
        killer = pymysql.connect(
            **options,
            port=int(database["PORT"] or 3306),
            database=database["NAME"],
            password=database["PASSWORD"] or "",
            autocommit=True,
        )
        try:
            with killer.cursor() as cursor:
                cursor.execute(f"KILL {int(session)}")
                for _ in range(200):
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [session]
                    )
                    if cursor.fetchone()[0] == 0:
                        break
                    time.sleep(0.025)  # the server reports the end of a session only by its absence
                else:
                    raise RuntimeError(f"MariaDB session {session} is still there after KILL")
        finally:
            killer.close()
    else:
        raise RuntimeError(f"{connection.vendor} has no database session to kill")


def marker_pid(path: str | os.PathLike) -> int | None:
    """The pid of the process that tripped a marker, or ``None`` if it was never tripped."""
    marker = Path(path)
    return int(marker.read_text().strip()) if marker.exists() else None


if __name__ in getattr(settings, "ATHM_RECEIVERS", ()):
    connect(**markers_from_environment())
