"""athm_core: the ATH Móvil domain as a Django app (payments, refunds, webhook events, signals).

It knows nothing of AWS or of the Lambda handler (its only outbound calls are to ATH Móvil's API), so it
works inside any ordinary Django project: see docs/architecture.md.
"""
