"""The routes API Gateway sends to Django: the webhook, the health check and (locally) the admin.

With ``ATHM_ADMIN=1`` (local use, ``athm serve``): the read-only admin at ``/admin/``, its overview page
for the merchant at ``/admin/overview/`` (``athm_core.views.overview``, behind the admin's staff login, and
the admin index's and every page's "View site" link), and the admin's CSS, scripts and pictures under
``/static/``, served from the apps' static folders (nothing else serves them with ``DEBUG`` off).
"""

from django.conf import settings
from django.urls import path, re_path, reverse_lazy

from handler import views

urlpatterns = [
    path("webhook/<str:secret>", views.webhook),
    path("health", views.health),
]

if settings.ATHM_ADMIN:
    from django.contrib import admin
    from django.contrib.staticfiles.views import serve as serve_static

    from athm_core.views import overview

    admin.site.site_header = admin.site.site_title = "ATH Móvil payments"
    admin.site.index_title = "Payments, refunds and webhooks"
    admin.site.index_template = "athm_core/admin_index.html"
    admin.site.site_url = reverse_lazy("athm_overview")  # the header's "View site": there is no other site
    urlpatterns += [
        # Before the admin's own routes, which would take "overview" for an app.
        path("admin/overview/", admin.site.admin_view(overview), name="athm_overview"),
        path("admin/", admin.site.urls),
        # insecure: served with DEBUG off, which is what a local server of the admin's files needs.
        re_path(r"^static/(?P<path>.+)$", serve_static, {"insecure": True}),
    ]

# Every error Django answers itself is JSON too, in the shape of the views' own.
handler400 = views.bad_request
handler403 = views.forbidden
handler404 = views.not_found
handler500 = views.server_error
