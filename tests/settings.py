"""Test settings: the production settings, with a test secret and an SQLite test database on disk.

The database comes from DATABASE_URL like in production (unset: SQLite). The SQLite test database is a
file, not memory, because the handler's worker thread and the concurrency tests' processes open their
own connections to it.
"""

import os
import tempfile
from pathlib import Path

from handler.settings import *  # noqa: F403
from handler.settings import DATABASES, INSTALLED_APPS

# The fault proofs' counting receivers keep a table (tests/heard): the test database must have it.
if "tests.heard" not in INSTALLED_APPS:
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.heard"]

ATHM_WEBHOOK_SECRET = "test-secret-7c1f0e9a4b2d4f6e8a0b1c2d3e4f5a6b,old-secret-being-rotated-out-00000000"

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"athm-test-{os.getpid()}.sqlite3")
    }
