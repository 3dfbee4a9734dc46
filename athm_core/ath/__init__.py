"""ATH Móvil's business API, and what athm_core does with it.

- :mod:`~athm_core.ath.client`: the HTTP client (findPayment, the transaction report, webhook registration).
- :mod:`~athm_core.ath.verification`: ask findPayment before an eCommerce event changes a payment.
- :mod:`~athm_core.ath.reconciliation`: create from the transaction report what lost webhooks missed.
"""
