"""URLs of the ready-made portal: the admin, login/logout, the jobs pages and the status callback."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("jobs/", include("offload.urls")),
    path("", include("offload.urls_root")),
]
