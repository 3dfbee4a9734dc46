"""shop: an example merchant's orders, kept in step with ATH Móvil payments by Django signal receivers.

Shipped in a Lambda layer (``python/shop/``) and enabled with ``ATHM_INSTALLED_APPS=shop`` (its models)
and ``ATHM_RECEIVERS=shop.receivers`` (its receivers). See the README next to this package.
"""
