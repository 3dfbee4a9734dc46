"""athm_core's settings: ordinary Django settings, each with a documented default.

A Django project sets them in its settings file (``ATHM_PUBLIC_TOKEN = "..."``); the Lambda handler maps
its environment onto them (``handler/settings.py``). Read them through :data:`athm_settings`, which looks
at ``django.conf.settings`` on every access, so ``override_settings`` and pytest-django's ``settings``
fixture work as usual::

    from athm_core.conf import athm_settings

    if athm_settings.ATHM_VERIFY: ...

==============================  ===========================================================================
setting                         default, and what it does
==============================  ===========================================================================
``ATHM_PUBLIC_TOKEN``           ``""``. The business's public token (ATH Business app: Settings >
                                Development), for findPayment, the transaction report and registration.
``ATHM_PRIVATE_TOKEN``          ``""``. The business's private token, for the transaction report, refunds
                                and registration. A credential: never logged or printed.
``ATHM_API_BASE_URL``           ``"https://www.athmovil.com"``: ATH Móvil's business API.
``ATHM_PAYMENTS_API_BASE_URL``  ``"https://payments.athmovil.com"``: where findPayment (and refunds) are.
``ATHM_VERIFY``                 ``None``: on when ``ATHM_PUBLIC_TOKEN`` is set. Ask ATH Móvil before an
                                eCommerce event changes a payment (:mod:`athm_core.ath.verification`).
``ATHM_VERIFY_TIMEOUT``         ``4.0`` seconds to wait for findPayment.
``ATHM_VERIFIER``               ``"athm_core.ath.verification.check"``: the dotted path of the check every
                                delivery goes through (:func:`athm_core.receive.receive`).
``ATHM_APPLY_UNVERIFIED_AFTER`` ``None``: a delivery ATH Móvil could not be asked about stays ``pending``
                                until ATH answers, however long. A number of seconds: the relay applies it
                                unverified once it has waited that long, with a ``verification`` warning
                                on the delivery that applied it (docs/security.md weighs the choice).
``ATHM_OUTBOX``                 ``False``. Write an outbox message with every state change, for a
                                publisher (:mod:`athm_core.outbox`).
``ATHM_OUTBOX_CUSTOMER_DATA``   ``False``. Put the customer's name, phone, email and message in those
                                messages.
==============================  ===========================================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "ATHM_PUBLIC_TOKEN": "",
    "ATHM_PRIVATE_TOKEN": "",
    "ATHM_API_BASE_URL": "https://www.athmovil.com",
    "ATHM_PAYMENTS_API_BASE_URL": "https://payments.athmovil.com",
    "ATHM_VERIFY": None,
    "ATHM_VERIFY_TIMEOUT": 4.0,
    "ATHM_VERIFIER": "athm_core.ath.verification.check",
    "ATHM_APPLY_UNVERIFIED_AFTER": None,
    "ATHM_OUTBOX": False,
    "ATHM_OUTBOX_CUSTOMER_DATA": False,
}


class AthmSettings:
    """The project's value of each setting in :data:`DEFAULTS`, or its default."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"{name} is not an athm_core setting")
        value = getattr(settings, name, DEFAULTS[name])
        if name == "ATHM_VERIFY" and value is None:
            return bool(self.ATHM_PUBLIC_TOKEN)
        return value


athm_settings = AthmSettings()
