"""The peer: a Django project as a merchant would start one (``django-admin startproject``) with
django-athm installed and its webhook view at ``/athm/webhook/``. It runs in its own virtual environment,
made by ``bench/run.py``, where our project is never installed."""
