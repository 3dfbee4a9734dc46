"""The routes API Gateway sends to Django: the webhook, the health check and (locally) the admin."""

from django.conf import settings
from django.urls import path

from handler import views

urlpatterns = [
    path("webhook/<str:secret>", views.webhook),
    path("health", views.health),
]

if settings.ATHM_ADMIN:
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))

# Every error Django answers itself is JSON too, in the shape of the views' own.
handler400 = views.bad_request
handler403 = views.forbidden
handler404 = views.not_found
handler500 = views.server_error
