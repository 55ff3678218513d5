"""The live server answers concurrent page requests correctly on every database.

On the in-memory SQLite database its threads share one connection; without
``tests/fixtures/live_server.py`` two fragments refreshing at once gave 404s and 500s for a
destination that exists (the browser test for Enable failed in CI that way).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.test import Client

from capi_destinations.models import Destination, Role, Tenant


@pytest.mark.django_db(transaction=True)
def test_concurrent_fragment_requests_all_answer_200(
    live_server: Any,
    tenant: Tenant,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
) -> None:
    destination = make_destination(name="Acme web shop")
    client = Client()
    client.force_login(make_user(tenant, Role.VIEWER, username="vera"))
    session = {"sessionid": client.cookies["sessionid"].value}
    fragments = [
        f"{live_server.url}/capi/d/{destination.code}/health/",
        f"{live_server.url}/capi/d/{destination.code}/deliveries/",
    ]

    def status(url: str) -> int:
        return requests.get(url, cookies=session, allow_redirects=False, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = Counter(pool.map(status, fragments * 60))

    assert answers == Counter({200: 120})
