"""``tests.heard``: a Django app for the tests only, whose receivers count in a table every notice they get.

Installed in the test settings (so the test database has its table) and, in child processes and ``athm``
subprocesses, through ``ATHM_INSTALLED_APPS=tests.heard`` with ``ATHM_RECEIVERS=tests.heard.receivers``.
"""
