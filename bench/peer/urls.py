from django.urls import include, path

urlpatterns = [path("athm/", include("django_athm.urls"))]
