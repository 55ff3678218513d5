from __future__ import annotations

import pytest
from django.core.cache import cache

from project.login import ADDRESS_MAX_FAILURES, MAX_FAILURES


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


def test_many_failures_from_one_address_lock_other_usernames_too(client, make_user) -> None:
    for number in range(ADDRESS_MAX_FAILURES):
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


PROXY = "10.0.0.1"


def sign_in(client, username: str, password: str, *, real_ip: str) -> int:
    """A sign-in through the reverse proxy, which puts the client's address in X-Real-IP."""
    return client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_REAL_IP=real_ip,
    ).status_code


def test_made_up_usernames_behind_the_proxy_do_not_lock_out_a_real_user(
    client, make_user, settings
) -> None:
    # Issue 14: five failures with made-up usernames, all through the site's reverse proxy,
    # locked every user out for 15 minutes.
    settings.CAPI_DESTINATIONS = {"TRUSTED_PROXY_HEADER": "HTTP_X_REAL_IP"}
    user = make_user()
    answers = [
        sign_in(client, f"nobody{number}", "guess", real_ip="203.0.113.66")
        for number in range(ADDRESS_MAX_FAILURES + 5)
    ]
    assert answers[:ADDRESS_MAX_FAILURES] == [200] * ADDRESS_MAX_FAILURES
    assert answers[ADDRESS_MAX_FAILURES:] == [429] * 5  # the guesser's own address is locked

    assert (
        sign_in(client, user.username, "correct horse battery staple", real_ip="198.51.100.7")
        == 302
    )


def test_five_made_up_usernames_lock_nobody_even_without_the_proxy_setting(
    client, make_user
) -> None:
    # Without TRUSTED_PROXY_HEADER everyone has the proxy's address; five failures are far
    # below the address limit, which is meant for floods.
    for number in range(MAX_FAILURES):
        sign_in(client, f"nobody{number}", "guess", real_ip="203.0.113.66")
    user = make_user()
    assert (
        sign_in(client, user.username, "correct horse battery staple", real_ip="198.51.100.7")
        == 302
    )


def test_a_username_is_locked_from_every_address(client, make_user, settings) -> None:
    settings.CAPI_DESTINATIONS = {"TRUSTED_PROXY_HEADER": "HTTP_X_REAL_IP"}
    user = make_user()
    for number in range(MAX_FAILURES):
        sign_in(client, user.username, "guess", real_ip=f"203.0.113.{number + 1}")
    assert (
        sign_in(client, user.username, "correct horse battery staple", real_ip="198.51.100.7")
        == 429
    )


def test_any_text_in_the_proxy_header_counts_without_error(client, settings, db) -> None:
    settings.CAPI_DESTINATIONS = {"TRUSTED_PROXY_HEADER": "HTTP_X_REAL_IP"}
    for _ in range(2):
        assert sign_in(client, "nobody", "guess", real_ip="1.2.3.4 <script>\t" + "x" * 300) == 200
