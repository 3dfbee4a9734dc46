"""athm_core: the ATH Móvil domain as a Django app (payments, refunds, webhook events, signals).

It knows nothing of AWS or HTTP, so it also works inside any ordinary Django project.
"""
