from __future__ import annotations

import pytest
from django.core.cache import cache

from project.login import MAX_FAILURES


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_login_works(client, make_user) -> None:
    user = make_user()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 302


def test_repeated_failures_lock_the_username_even_with_the_right_password(
    client, make_user
) -> None:
    user = make_user()
    for _ in range(MAX_FAILURES):
        response = client.post("/accounts/login/", {"username": user.username, "password": "guess"})
        assert response.status_code == 200
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_failures_from_one_address_lock_other_usernames_too(client, make_user) -> None:
    for number in range(MAX_FAILURES):
        client.post("/accounts/login/", {"username": f"someone{number}", "password": "guess"})
    user = make_user()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 429


def test_other_addresses_and_users_are_not_locked(client, make_user) -> None:
    victim = make_user()
    for _ in range(MAX_FAILURES):
        client.post("/accounts/login/", {"username": victim.username, "password": "guess"})
    other = make_user()
    response = client.post(
        "/accounts/login/",
        {"username": other.username, "password": "correct horse battery staple"},
        REMOTE_ADDR="198.51.100.9",
    )
    assert response.status_code == 302
