"""The token field in a real browser (issue 16): show/hide, what was pasted kept after a server
error (the server never sends it back), and a pasted "Bearer EAA…" recognised."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from capi_destinations import problems
from capi_destinations.models import Destination, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, PIXEL_NAME, log_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def open_add_form(page: Page, live_server: Any, editor: Any, tenant: Tenant) -> None:
    log_in(page, live_server, editor)
    url = reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})
    page.goto(f"{live_server.url}{url}")


def test_the_toggle_shows_and_hides_the_token_by_keyboard(
    page: Page, live_server: Any, editor: Any, tenant: Tenant
) -> None:
    open_add_form(page, live_server, editor, tenant)
    token_input = page.get_by_test_id("token-input")
    toggle = page.get_by_test_id("token-toggle")
    expect(token_input).to_have_attribute("type", "password")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(toggle).to_have_accessible_name("Show token")

    token_input.fill("EAAbc")
    token_input.press("Tab")
    expect(toggle).to_be_focused()
    page.keyboard.press("Enter")
    expect(token_input).to_have_attribute("type", "text")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Space")
    expect(token_input).to_have_attribute("type", "password")
    expect(toggle).to_have_attribute("aria-pressed", "false")


def test_a_server_error_keeps_the_pasted_token_in_the_browser(
    page: Page, live_server: Any, editor: Any, tenant: Tenant, use_sandbox: Sandbox
) -> None:
    token = make_token("kept-across-the-error")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    open_add_form(page, live_server, editor, tenant)
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", token)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    add_url = reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})
    history_length = page.evaluate("() => history.length")

    # The name is missing: the server refuses the form.
    with page.expect_response(
        lambda response: response.request.method == "POST" and response.url.endswith(add_url)
    ) as refused:
        page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("error-name")).to_be_visible()
    expect(page.get_by_test_id("token-input")).to_have_value(token)
    # The note for a browser without scripts stays hidden while the token is there, and the
    # kept token is checked with Meta again.
    expect(page.get_by_test_id("token-repaste")).to_be_hidden()
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    answer = refused.value.text()
    assert "error-name" in answer
    assert token not in answer
    assert token[:20] not in answer
    # The same page, corrected in place: no history entry to go back through.
    assert page.evaluate("() => history.length") == history_length
    assert page.url.endswith(add_url)

    # Fixed, it saves with the kept token.
    page.fill("input[name=name]", "Acme web shop")
    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("created-status")).to_contain_text(PIXEL_NAME)
    assert Destination.objects.get().access_token == token


def test_replace_token_keeps_the_token_and_goes_back_to_the_destination(
    page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
) -> None:
    destination = make_destination(name="Acme web shop")
    log_in(page, live_server, editor)
    url = reverse("capi_destinations:replace_token", kwargs={"code": destination.code})
    page.goto(f"{live_server.url}{url}")
    cut = make_token("cut-short")[:60]
    page.fill("input[name=access_token]", cut)
    page.get_by_test_id("save-token").click()
    expect(page.get_by_test_id("error-access_token")).to_contain_text("looks truncated")
    expect(page.get_by_test_id("token-input")).to_have_value(cut)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "error")

    whole = make_token("whole")
    page.fill("input[name=access_token]", whole)
    page.get_by_test_id("save-token").click()
    page_url = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    expect(page).to_have_url(f"{live_server.url}{page_url}")
    expect(page.get_by_test_id("messages")).to_contain_text("Token replaced")
    destination.refresh_from_db()
    assert destination.access_token == whole


def test_a_pasted_bearer_token_is_recognised_and_the_word_removed(
    page: Page, live_server: Any, editor: Any, tenant: Tenant, use_sandbox: Sandbox
) -> None:
    token = make_token("from-an-authorization-header")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    open_add_form(page, live_server, editor, tenant)
    hint = page.get_by_test_id("bearer-hint")
    expect(hint).to_be_hidden()
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", f"Bearer {token}")
    expect(hint).to_be_visible()

    hint.get_by_role("button", name="Remove “Bearer ”").click()
    expect(page.get_by_test_id("token-input")).to_have_value(token)
    expect(hint).to_be_hidden()
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")


def test_without_javascript_the_form_says_to_paste_the_token_again(
    browser: Browser, live_server: Any, editor: Any, tenant: Tenant
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        open_add_form(page, live_server, editor, tenant)
        expect(page.get_by_test_id("token-toggle")).to_be_hidden()
        page.fill("input[name=pixel_id]", "12ab")
        page.fill("input[name=access_token]", make_token("no-script"))
        page.get_by_test_id("save-destination").click()

        expect(page.get_by_test_id("error-pixel_id")).to_be_visible()
        expect(page.get_by_test_id("token-input")).to_have_value("")
        expect(page.get_by_test_id("token-repaste")).to_have_text(
            "The token field is empty: paste the token again — it is never sent back to the page."
        )
    finally:
        context.close()


def test_cancel_on_the_htmx_posted_forms_is_a_plain_link(
    page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
) -> None:
    destination = make_destination(name="Acme web shop")
    log_in(page, live_server, editor)
    page_url = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    for name in ("destination_edit", "replace_token"):
        page.goto(
            live_server.url
            + reverse(f"capi_destinations:{name}", kwargs={"code": destination.code})
        )
        page.get_by_test_id("cancel").click()
        expect(page).to_have_url(f"{live_server.url}{page_url}")
        expect(page.get_by_test_id("controls")).to_be_visible()


def test_a_token_cut_short_of_its_end_says_the_paste_looks_incomplete(
    page: Page, live_server: Any, editor: Any, tenant: Tenant, use_sandbox: Sandbox
) -> None:
    """Cut to 150 characters, the token passes the format rules and Meta answers 190 "Cannot
    parse access token": the form says the paste looks incomplete, never "revoked"."""
    token = make_token("cut-at-150")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    open_add_form(page, live_server, editor, tenant)
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", token[:150])

    check = page.get_by_test_id("token-check")
    expect(check).to_have_attribute("data-state", "error")
    expect(check).to_contain_text(problems.TOKEN_INCOMPLETE.reason)
    expect(check).to_contain_text(problems.TOKEN_INCOMPLETE.fix)
    expect(check).not_to_contain_text("revoked")

    page.fill("input[name=access_token]", token)
    expect(check).to_have_attribute("data-state", "ok")
