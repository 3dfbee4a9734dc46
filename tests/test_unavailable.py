"""A database that cannot be reached: 503 (so ATH Móvil or a replay delivers again), never a crash."""

import pytest

from tests.conftest import sample

UNREACHABLE = {
    "postgresql": "postgres://postgres@127.0.0.1:9/athm",
    "mysql": "mysql://root@127.0.0.1:9/athm",
    "sqlite": "sqlite:////nonexistent-directory/athm.sqlite3",
}


@pytest.mark.parametrize("database", sorted(UNREACHABLE))
def test_unreachable_database_answers_503(start_child, database):
    child = start_child(DATABASE_URL=UNREACHABLE[database])
    child.wait_ready()
    webhook = child.request(sample("ecommerce_completed.documented"))
    assert webhook["status"] == 503, child.log()
    assert webhook["answer"]["error"] == "database_unavailable"
    assert webhook["signals"] == {}
    health = child.request(path="/health", method="GET")
    assert health["status"] == 503
    # A wrong secret is still a plain 404: it never needed the database.
    assert child.request(sample("simulated"), path="/webhook/wrong")["status"] == 404
    assert child.close() == 0, child.log()
