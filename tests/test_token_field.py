"""The token field of the add, edit and replace-token forms (issue 16): one "required" message,
a pasted ``Bearer EAA…`` recognised, and a form with an error that never sends the token back
but says plainly to paste it again."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from capi_destinations import tokens
from capi_destinations.models import Destination, Role
from tests.conftest import make_token

HTMX = {"HTTP_HX_REQUEST": "true"}
PASTE_AGAIN = "paste the token again — it is never sent back to the page"


@pytest.fixture
def editor(make_user, tenant):
    return make_user(tenant, Role.EDITOR, username="eddie")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_url(tenant) -> str:
    return reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})


def field_errors(content: str, field: str) -> list[str]:
    return re.findall(rf'data-testid="error-{field}">([^<]*)<', content)


def form_values(**overrides: str) -> dict[str, str]:
    return {
        "name": "Acme web",
        "pixel_id": "1234567890123456",
        "access_token": "",
        "enabled": "on",
        "consent_policy": "send_always",
        "missing_consent": "granted",
        **overrides,
    }


def test_an_empty_token_on_the_add_form_says_required_once(editor, tenant) -> None:
    response = logged_in(editor).post(add_url(tenant), form_values())
    content = response.content.decode()
    assert field_errors(content, "access_token") == ["Paste the Conversions API access token."]


def test_an_empty_token_on_the_replace_page_says_what_to_paste_once(editor, destination) -> None:
    url = reverse("capi_destinations:replace_token", kwargs={"code": destination.code})
    content = logged_in(editor).post(url, {"access_token": ""}).content.decode()
    assert field_errors(content, "access_token") == ["Paste the Conversions API access token."]


def test_a_token_pasted_with_the_word_bearer_is_taken_without_it(token) -> None:
    assert tokens.clean_access_token(f"Bearer {token}") == token
    assert tokens.clean_access_token(f"  bearer  {token}\n") == token


def test_a_bearer_token_is_saved_as_the_token_alone(graph_settings, editor, tenant, token) -> None:
    graph_settings.register_pixel("1234567890123456", "Acme Shoes - Web", [token])
    response = logged_in(editor).post(add_url(tenant), form_values(access_token=f"Bearer {token}"))
    assert response.status_code == 200
    assert Destination.objects.get().access_token == token


def test_a_form_with_an_error_never_echoes_the_token_and_says_to_paste_it_again(
    editor, tenant
) -> None:
    token = make_token("pasted-then-refused-for-another-field")
    for headers in ({}, HTMX):
        response = logged_in(editor).post(
            add_url(tenant), form_values(pixel_id="12ab", access_token=token), **headers
        )
        content = response.content.decode()
        assert "digits only" in content
        assert token not in content
        assert token[:20] not in content
        note = re.search(r'data-testid="token-repaste"[^>]*>([^<]*)<', content)
        assert note is not None
        assert PASTE_AGAIN in note.group(1)


def test_no_paste_again_note_when_nothing_was_pasted(editor, tenant, destination) -> None:
    content = logged_in(editor).get(add_url(tenant)).content.decode()
    assert "token-repaste" not in content
    edit = reverse("capi_destinations:destination_edit", kwargs={"code": destination.code})
    content = logged_in(editor).post(edit, {"name": ""}).content.decode()
    assert "token-repaste" not in content


def test_the_replace_page_says_to_paste_again_after_an_error(editor, destination) -> None:
    url = reverse("capi_destinations:replace_token", kwargs={"code": destination.code})
    pasted = make_token("another")[:60]
    content = logged_in(editor).post(url, {"access_token": pasted}).content.decode()
    assert "looks truncated" in content
    assert pasted not in content
    assert PASTE_AGAIN in content


def test_the_token_input_is_kept_by_htmx_across_the_forms_own_swap(editor, tenant) -> None:
    """The form posts through htmx and the token input carries ``hx-preserve`` with a stable id:
    the browser keeps what was pasted, the server never sends it back."""
    content = logged_in(editor).get(add_url(tenant)).content.decode()
    token_input = re.search(r"<input[^>]*data-testid=\"token-input\"[^>]*>", content).group(0)
    assert 'id="id_access_token"' in token_input
    assert "hx-preserve" in token_input
    form = re.search(r"<form[^>]*data-testid=\"destination-form\"[^>]*>", content).group(0)
    assert 'hx-boost="true"' in form
    # htmx keeps no copy of the form page, and adds no history entry for its answers.
    assert 'hx-history="false"' in form
    refused = logged_in(editor).post(add_url(tenant), form_values(name=""), **HTMX)
    assert refused["HX-Push-Url"] == "false"


def test_a_saved_form_posted_by_htmx_goes_to_the_destination_page(editor, destination) -> None:
    url = reverse("capi_destinations:replace_token", kwargs={"code": destination.code})
    response = logged_in(editor).post(url, {"access_token": make_token("fresh")}, **HTMX)
    assert response["HX-Redirect"] == reverse(
        "capi_destinations:destination", kwargs={"code": destination.code}
    )
