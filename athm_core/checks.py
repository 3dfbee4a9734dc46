"""System checks (``manage.py check``, and before most commands): settings that would fail every delivery
are reported when the project starts, not one webhook at a time."""

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def verifier_is_importable(app_configs, **kwargs) -> list[Error]:
    """``ATHM_VERIFIER`` names a function that can be imported."""
    from athm_core.receive import configured_check

    try:
        configured_check()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc), hint="a dotted path such as 'athm_core.ath.verification.check'", id="athm_core.E001"
            )
        ]
    return []
