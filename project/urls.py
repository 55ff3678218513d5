from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from project.login import ThrottledLoginView

urlpatterns = [
    path("", RedirectView.as_view(url="/capi/", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("capi/", include("capi_destinations.urls")),
    # The demo shop's own pages (issue 18 end to end: first-party click IDs, a webhook, erasure).
    path("shop/", include("project.shop.urls")),
]
