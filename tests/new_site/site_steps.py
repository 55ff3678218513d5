"""Steps run inside a new host site by ``tests/test_install_into_new_site.py``.

Run as ``manage.py shell -c "<this file>"`` with the installed wheel (not this repository) on the
path; ``CAPI_SITE_STEP`` picks the step. Each step asserts what a host site would see and prints
one JSON line, ``RESULT {...}``, for the test to read. Users are created by their login name
(``USERNAME_FIELD``), so the same steps serve a site with Django's user model and one whose users
log in by email and have no ``username``.
"""

from __future__ import annotations

import json
import os
import re
from io import StringIO
from typing import Any

import requests
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_q.models import OrmQ

import capi_destinations
from capi_destinations import destinations, digest, invitations
from capi_destinations.models import (
    Destination,
    Event,
    EventStatus,
    ImportRun,
    ImportStatus,
    Membership,
    NotificationChannel,
    Role,
    Tenant,
)

PASSWORD = "a new site's password 1"
# A well-formed token: the sandbox, open, accepts any such token on any pixel.
TOKEN = "EAA" + "Zx9" * 63
NEW_TOKEN = "EAA" + "Qw7" * 63
USERS = get_user_model()
LOGIN_FIELD = USERS.USERNAME_FIELD


def login_name(name: str) -> str:
    return f"{name}@example.com" if LOGIN_FIELD == "email" else name


def user(name: str, **flags: Any) -> Any:
    found = USERS.objects.filter(**{LOGIN_FIELD: login_name(name)}).first()
    if found is not None:
        return found
    if flags.get("is_superuser"):
        return USERS.objects.create_superuser(**{LOGIN_FIELD: login_name(name)}, password=PASSWORD)
    return USERS.objects.create_user(**{LOGIN_FIELD: login_name(name)}, password=PASSWORD)


def destination() -> Destination:
    tenant, _ = Tenant.objects.get_or_create(slug="acme", defaults={"name": "Acme Shoes"})
    found = Destination.objects.filter(tenant=tenant).first()
    if found is not None:
        return found
    made = Destination(tenant=tenant, name="Acme web shop", pixel_id="1234567890123456")
    made.access_token = TOKEN
    made.allowed_origins = "https://shop.example.com"
    made.save()
    Membership.objects.get_or_create(user=user("member"), tenant=tenant, defaults={"role": "admin"})
    return made


def purchase(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thanks",
        "user_data": {"email": "jane@example.com", "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


def record_with_a_broken_broker() -> dict[str, Any]:
    """No broker can take a task (``CAPI_BROKER``: ``missing``, Q_CLUSTER left out and Redis not
    installed; ``redis_down``, Redis at a closed port): nothing the host site does may fail."""
    setup_test_environment()
    prefix = os.environ["CAPI_BROKER"]
    target = destination()
    result = capi_destinations.track(target, purchase(f"{prefix}-1"))
    assert result.status == "stored", result
    results = capi_destinations.track_many(target, [purchase(f"{prefix}-2")])
    assert [item.status for item in results] == ["stored"]

    secret = target.set_ingest_secret()
    target.save()
    endpoint = reverse("capi_destinations:ingest_events", args=[target.ingest_key])
    response = Client().post(
        endpoint,
        data=json.dumps(purchase(f"{prefix}-3")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 202, response.content

    admin = Client()
    admin.force_login(user("admin", is_superuser=True))
    change = reverse("admin:capi_destinations_destination_change", args=[target.pk])
    assert admin.get(change).status_code == 200
    form = {
        "name": target.name,
        "pixel_id": target.pixel_id,
        "access_token": NEW_TOKEN,
        "enabled": "on",
        "consent_policy": target.consent_policy,
        "missing_consent": target.missing_consent,
    }
    response = admin.post(change, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    replace = reverse("capi_destinations:replace_token", kwargs={"code": target.code})
    response = admin.post(replace, {"access_token": TOKEN})
    assert response.status_code == 302, response.content.decode()[:3000]
    pending = Event.objects.filter(status=EventStatus.PENDING, event_id__startswith=prefix)
    return {"pending": pending.count()}


def record_with_the_orm_broker_and_dispatch() -> dict[str, Any]:
    """The guide's Q_CLUSTER: recording queues a dispatch task in the database; then
    ``capi_dispatch`` (what a cron job runs) sends every pending event to the sandbox."""
    before = OrmQ.objects.count()
    result = capi_destinations.track(destination(), purchase("orm-broker-1"))
    assert result.status == "stored", result
    queued = OrmQ.objects.count() - before
    output = StringIO()
    call_command("capi_dispatch", stdout=output)
    sandbox = settings.CAPI_DESTINATIONS["GRAPH_API_BASE_URL"]
    received = requests.get(f"{sandbox}/_sandbox/events", timeout=10).json()["events"]
    return {
        "queued_tasks": queued,
        "dispatch_output": output.getvalue(),
        "received": sorted(item["event_id"] for item in received),
        "delivered": Event.objects.filter(status=EventStatus.DELIVERED).count(),
    }


def _walk(patterns: list[URLPattern | URLResolver]) -> list[tuple[str, tuple[str, ...]]]:
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes += _walk(pattern.url_patterns)
        else:
            routes.append((str(pattern.name), tuple(pattern.pattern.converters)))
    return routes


def render_every_page() -> dict[str, Any]:
    """Every page of the app for a superuser and a member; login, members, redelivery, logout."""
    setup_test_environment()
    target = destination()
    member = user("member")
    colleague = user("colleague")
    superuser = user("admin", is_superuser=True)
    event = Event.objects.order_by("pk").first()
    assert event is not None

    anonymous = Client()
    overview = reverse("capi_destinations:overview")
    response = anonymous.get(overview)
    assert response.status_code == 302
    assert response["Location"].startswith(settings.LOGIN_URL), response["Location"]
    login_page = anonymous.get(response["Location"])
    assert login_page.status_code == 200
    assert 'data-testid="login"' in login_page.content.decode()
    response = anonymous.post(
        response["Location"], {"username": login_name("member"), "password": PASSWORD}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    overview_page = anonymous.get(overview)
    assert overview_page.status_code == 200
    in_site_layout = 'data-testid="site-layout"' in overview_page.content.decode()

    invitation, invitation_token = invitations.invite(
        target.tenant, "walked@example.com", Role.VIEWER, actor=member
    )
    channel = NotificationChannel.objects.create(
        tenant=target.tenant, kind="email", name="Ops", target="ops@example.com", alert_kinds=[]
    )
    values = {
        "channel": str(channel.code),
        "signature": digest.unsubscribe_token(member),
        "tenant_slug": target.tenant.slug,
        "code": str(target.code),
        "username": member.get_username(),
        "ingest_key": target.ingest_key,
        "invitation_code": str(invitation.code),
        "token": invitation_token,
        "event_pk": str(event.pk),
        "run": str(
            ImportRun.objects.create(
                destination=target,
                file_name="store-sales.csv",
                status=ImportStatus.DONE,
                rows_read=2,
                stored=1,
                rejected=1,
                rejected_rows=[{"line": 3, "reason": "No event time.", "columns": {}}],
            ).code
        ),
    }
    _, resolver = get_resolver().namespace_dict["capi_destinations"]
    statuses: dict[str, dict[str, int]] = {}
    for who, account in (("superuser", superuser), ("member", member)):
        client = Client()
        client.force_login(account)
        for name, parameters in _walk(resolver.url_patterns):
            url = reverse(
                f"capi_destinations:{name}", kwargs={key: values[key] for key in parameters}
            )
            query = f"?event_name={event.event_name}&event_id={event.event_id}"
            response = client.get(url + query)
            statuses.setdefault(name, {})[who] = response.status_code
            assert response.status_code < 500, (who, url, response.content.decode()[:3000])

    # The app's admin pages: every model's list, and its change page for the first row.
    client = Client()
    client.force_login(superuser)
    for model in apps.get_app_config("capi_destinations").get_models():
        if model not in admin.site._registry:
            continue
        info = (model._meta.app_label, model._meta.model_name)
        response = client.get(reverse("admin:{}_{}_changelist".format(*info)))
        statuses[f"admin:{info[1]}_changelist"] = {"superuser": response.status_code}
        assert response.status_code == 200, (info, response.content.decode()[:3000])
        first = model.objects.order_by("pk").first()
        if first is not None:
            response = client.get(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
            assert response.status_code == 200, (info, response.content.decode()[:3000])

    members = reverse("capi_destinations:members", kwargs={"tenant_slug": target.tenant.slug})
    client = Client()
    client.force_login(member)
    response = client.post(
        members, {"username": colleague.get_username(), "role": Role.VIEWER}, follow=True
    )
    assert response.status_code == 200
    response = client.get(members)
    page = response.content.decode()
    assert f'data-username="{colleague.get_username()}"' in page, page
    login_field_label = str(response.context["add_form"]["username"].label)

    invited = join_by_invitation(client, members)

    Event.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
    assert destinations.redeliver([event.pk], actor=member) == 1
    event.refresh_from_db()
    assert member.get_username() in event.status_reason, event.status_reason

    response = client.post(reverse("logout"))
    assert response.status_code in (200, 302)
    return {
        "statuses": statuses,
        "redelivery_reason": event.status_reason,
        "in_site_layout": in_site_layout,
        "login_field_label": login_field_label,
        **invited,
    }


def join_by_invitation(admin: Client, members: str) -> dict[str, Any]:
    """The member (an admin) invites an address by email; the link from the email, opened
    without a login, creates the account with the site's user model and joins it."""
    slug = members.rstrip("/").split("/")[-2]
    invite = reverse("capi_destinations:invite", kwargs={"tenant_slug": slug})
    response = admin.post(invite, {"email": "Invitee@Example.com", "role": Role.EDITOR})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert len(mail.outbox) == 1, mail.outbox
    link = re.search(r"http://testserver(/\S+/invitation/\S+/)", mail.outbox[0].body)
    assert link is not None, mail.outbox[0].body
    invited = Client()
    page = invited.get(link.group(1), follow=True)
    assert page.status_code == 200, page.content.decode()[:3000]
    asks_for_login_name = "username" in page.context["form"].fields
    response = invited.post(
        page.wsgi_request.path,
        {
            "username": "invitee@example.com",
            "password1": "an invited person's passphrase 7",
            "password2": "an invited person's passphrase 7",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    membership = Membership.objects.select_related("user").get(
        tenant__slug=slug, user__in=USERS.objects.filter(email="invitee@example.com")
    )
    overview = invited.get(response["Location"]).content.decode()
    assert "you are now editor of" in overview, overview[:3000]
    return {
        "invited_login": membership.user.get_username(),
        "invited_role": membership.role,
        "invite_asks_for_login_name": asks_for_login_name,
    }


STEPS = {
    "broken_broker": record_with_a_broken_broker,
    "orm_broker": record_with_the_orm_broker_and_dispatch,
    "pages": render_every_page,
}

print("RESULT " + json.dumps(STEPS[os.environ["CAPI_SITE_STEP"]]()))
