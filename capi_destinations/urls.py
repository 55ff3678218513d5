"""The app's URLs. A host site mounts them under any prefix (the demo uses ``/capi/``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

app_name = "capi_destinations"

urlpatterns: list[URLPattern | URLResolver] = []
