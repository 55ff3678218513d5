"""One wording per problem: the table, the card, the token check, the README and the card notes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from capi_destinations import destinations, graph_errors, health, problems
from capi_destinations.models import Destination, EventStatus, Membership, Role
from capi_destinations.sandbox import Sandbox

README = Path(__file__).resolve().parent.parent / "README.md"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def readme_problems_table() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- problems-table: start -->\n(.*?)\n<!-- problems-table: end -->", text, re.S
    )
    assert found, "README.md lost its problems table markers"
    return found.group(1)


def test_the_readme_table_is_the_problems_table_word_for_word() -> None:
    # Change a wording in problems.py, then paste `python -m capi_destinations.problems` there.
    assert readme_problems_table() == problems.readme_table()


def test_every_problem_has_a_reason_and_a_fix_and_a_known_control() -> None:
    for problem in problems.PROBLEMS.values():
        assert problem.reason.endswith("."), problem.key
        assert problem.fix.endswith("."), problem.key
        assert problem.action in ("", *problems.ACTION_LABELS), problem.key


@pytest.mark.parametrize(
    ("code", "subcode", "message", "problem"),
    [
        (190, None, "Error validating access token", problems.TOKEN_REVOKED),
        (190, 467, "Invalid access token", problems.TOKEN_REVOKED),
        (190, 463, "Session has expired", problems.TOKEN_EXPIRED),
        (
            190,
            None,
            "Invalid OAuth access token - Cannot parse access token",
            problems.TOKEN_INCOMPLETE,
        ),
        (100, 33, "Unsupported get request.", problems.WRONG_PIXEL),
    ],
)
def test_metas_answers_read_in_the_problems_words(
    code: int, subcode: int | None, message: str, problem: problems.Problem
) -> None:
    info = graph_errors.classify(400, code, subcode, False, message=message)

    assert (info.explanation, info.fix, info.problem) == (problem.reason, problem.fix, problem.key)


@pytest.fixture
def revoked(graph_settings: Sandbox, destination: Destination) -> Destination:
    graph_settings.register_pixel(destination.pixel_id, "Acme Shoes", [destination.access_token])
    graph_settings.revoke(destination.access_token)
    health.check_destination(destination)
    destination.refresh_from_db()
    return destination


def test_the_card_and_the_token_check_word_a_revoked_token_the_same(
    graph_settings: Sandbox, revoked: Destination
) -> None:
    check = destinations.check_token(revoked.pixel_id, revoked.access_token)
    reason = revoked.health_reasons[0]

    assert check.message == reason["message"] == problems.TOKEN_REVOKED.reason
    assert check.fix == reason["fix"] == problems.TOKEN_REVOKED.fix
    assert check.problem == reason["problem"] == "token_revoked"


def test_a_cut_token_in_the_form_says_not_pasted_whole_as_the_card_does(
    destination: Destination,
) -> None:
    check = destinations.check_token(destination.pixel_id, destination.access_token[:60])

    assert check.message.startswith(problems.TOKEN_NOT_WHOLE.reason)
    assert check.fix == problems.TOKEN_NOT_WHOLE.fix


def test_the_health_card_shows_reason_fix_and_a_link_to_replace_token(
    revoked: Destination, make_user: Any, tenant: Any
) -> None:
    editor = make_user(tenant, Role.EDITOR, username="eddie")

    page = logged_in(editor).get(
        reverse("capi_destinations:health_card", kwargs={"code": revoked.code})
    )

    html = page.content.decode()
    first = html.split('data-testid="first-problem"', 1)[1].split("</div>", 1)[0]
    assert escape(problems.TOKEN_REVOKED.reason) in first
    assert escape(problems.TOKEN_REVOKED.fix) in first
    replace = reverse("capi_destinations:replace_token", kwargs={"code": revoked.code})
    assert f'href="{replace}"' in first
    assert ">Replace token</a>" in first


def test_a_viewer_reads_the_fix_without_a_link_to_a_button_they_cannot_use(
    revoked: Destination, make_user: Any, tenant: Any
) -> None:
    viewer = make_user(tenant, Role.VIEWER, username="vera")

    html = (
        logged_in(viewer)
        .get(reverse("capi_destinations:health_card", kwargs={"code": revoked.code}))
        .content.decode()
    )

    assert escape(problems.TOKEN_REVOKED.fix) in html
    assert 'data-testid="fix-link"' not in html


def overview_card(html: str, destination: Destination) -> str:
    return html.split(f'data-code="{destination.code}"', 1)[1].split("</article>", 1)[0]


def test_the_overview_card_links_its_fix_to_the_control_for_those_who_may_use_it(
    revoked: Destination, make_user: Any, make_tenant: Any, tenant: Any
) -> None:
    """The README: "the card says the reason and, under it, the fix … with a link to the control
    that applies it": the overview's card as the destination page's health card. A user who
    edits one client and only views another gets the link on the first client's cards alone."""
    other = make_tenant("Globex")
    editor = make_user(tenant, Role.EDITOR, username="eddie")
    Membership.objects.create(tenant=other, user=editor, role=Role.VIEWER)
    globex = Destination.objects.create(
        tenant=other,
        name="Globex shop",
        pixel_id="6543210987654321",
        access_token=revoked.access_token,
    )
    health.check_destination(globex)
    replace = reverse("capi_destinations:replace_token", kwargs={"code": revoked.code})
    link = f'<a class="capi-button capi-fix__action" href="{replace}" data-testid="fix-link"'
    client = logged_in(editor)

    for answer in (
        client.get(reverse("capi_destinations:overview")),
        client.get(
            reverse("capi_destinations:overview"),
            HTTP_HX_REQUEST="true",
            HTTP_HX_TARGET="capi-cards",
        ),
        client.get(reverse("capi_destinations:destination_card", kwargs={"code": revoked.code})),
    ):
        card = overview_card(answer.content.decode(), revoked)
        fix = card.split('data-testid="first-fix"', 1)[1]
        assert escape(problems.TOKEN_REVOKED.fix) in fix
        assert link in fix
    # Globex, where the editor is a viewer: the fix in words, no link to a button they cannot use.
    html = client.get(reverse("capi_destinations:overview")).content.decode()
    globex_card = overview_card(html, globex)
    assert escape(problems.TOKEN_REVOKED.fix) in globex_card
    assert 'data-testid="fix-link"' not in globex_card


def test_sending_off_links_its_fix_to_the_enable_control(
    graph_settings: Sandbox, make_destination: Any, make_user: Any, tenant: Any
) -> None:
    destination = make_destination(enabled=False)
    health.check_destination(destination)
    editor = make_user(tenant, Role.EDITOR, username="eddie")

    html = (
        logged_in(editor)
        .get(reverse("capi_destinations:destination", kwargs={"code": destination.code}))
        .content.decode()
    )

    page = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    assert f'href="{page}#controls" data-testid="fix-link" data-action="enable">Enable</a>' in html
    assert 'id="controls"' in html


# --- notes ------------------------------------------------------------------------------------


def test_cards_note_test_mode_and_low_match_quality_at_the_same_query_count(
    graph_settings: Sandbox,
    make_destination: Any,
    make_event: Any,
    make_user: Any,
    tenant: Any,
    django_assert_num_queries: Any,
) -> None:
    owner = make_user(tenant, Role.ADMIN, username="olivia")
    quiet = make_destination(name="Quiet shop", test_event_code="TEST123", enabled=False)
    thin = make_destination(name="Thin shop")
    make_event(destination=thin, status=EventStatus.DELIVERED, match_quality=1.5)
    health.check_all_destinations(destination_ids=[quiet.pk, thin.pk])
    client = logged_in(owner)
    client.get(reverse("capi_destinations:overview"))  # warm the session

    with django_assert_num_queries(7):
        html = client.get(reverse("capi_destinations:overview")).content.decode()

    cards = {
        name: html.split(f">{name}</a>", 1)[1].split("</article>", 1)[0]
        for name in ("Quiet shop", "Thin shop")
    }
    assert escape(problems.TEST_MODE.reason) in cards["Quiet shop"]
    assert escape(problems.LOW_MATCH_QUALITY.reason) not in cards["Quiet shop"]
    assert escape(problems.LOW_MATCH_QUALITY.reason) in cards["Thin shop"]
    assert escape(problems.TEST_MODE.reason) not in cards["Thin shop"]


def test_the_destination_page_shows_the_notes_on_the_health_card(
    graph_settings: Sandbox, make_destination: Any, make_user: Any, tenant: Any
) -> None:
    destination = make_destination(test_event_code="TEST123")
    viewer = make_user(tenant, Role.VIEWER, username="vera")

    html = (
        logged_in(viewer)
        .get(reverse("capi_destinations:health_card", kwargs={"code": destination.code}))
        .content.decode()
    )

    assert 'data-note="test_mode"' in html
    assert escape(problems.TEST_MODE.reason) in html


def test_a_note_clears_when_the_next_check_no_longer_finds_it(
    graph_settings: Sandbox, make_destination: Any, make_event: Any
) -> None:
    destination = make_destination()
    make_event(destination=destination, status=EventStatus.DELIVERED, match_quality=1.0)
    health.check_destination(destination)
    assert destination.health_notes == ["low_match_quality"]

    destination.events.update(match_quality=9.0)
    health.check_destination(destination)

    destination.refresh_from_db()
    assert destination.health_notes == []
