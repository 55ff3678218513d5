"""``manage.py capi_demo``: an agency, two clients and destinations in every state, for a demo.

Creates (or completes) two tenants, an agency user who administers both and a client user who
views one, destinations that point at the Graph API sandbox — healthy ones (one with a send-only
token), one whose token the sandbox has revoked, one with sending turned off — and a day of
sample events of varied quality recorded through ``capi_destinations.track_many``, each at the
time it would have arrived, and delivered by dispatch passes through that day, so that
diagnostics, match quality, delivery attempts and charts are the app's own work. The health
checks run at the end, so the cards are green or red at first sight, and Meta's own Event Match
Quality is read once from the sandbox, so the pages show both scores. It prints the logins and
two sandbox-only tokens to try.

Running it again changes nothing harmful: users, tenants and destinations are only created when
missing (passwords only on creation), the sandbox — which forgets everything when it restarts —
is told again about the demo's pixels, and a day of events is added only when the demo has none
from the last 24 hours. Never run this on a production site.

Acme Shoes excludes its office's addresses and its test orders, and its mobile checkout sends
only checkouts and purchases, so the cards show suppressed events with their reasons. The
payment webhooks' Purchases go through :meth:`Command.confirm_payment`, which the demo site
overrides to mark its shop's orders paid: its conversion rule records them.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from capi_destinations import (
    clock,
    destinations,
    dispatch,
    exclusions,
    health,
    imports,
    match_quality,
    track_many,
)
from capi_destinations.conf import app_settings
from capi_destinations.management.commands._demo_traffic import USER_AGENTS, SampleTraffic, Site
from capi_destinations.models import (
    ConsentPolicy,
    Destination,
    Event,
    ImportRun,
    Membership,
    Role,
    Tenant,
)
from capi_destinations.routing import EventFilter
from capi_destinations.sandbox import errors as sandbox_errors

DEMO_ADMIN = ("admin", "capi-demo-admin")
AGENCY_LOGIN = ("agency", "capi-demo-agency")
CLIENT_LOGIN = ("client", "capi-demo-client")

ACME = ("Acme Shoes", "acme-shoes")
GLOBEX = ("Globex Coffee", "globex-coffee")

# Hours of history recorded when the demo has no events from the last day.
HISTORY_HOURS = 24
# The sandbox's control API answers at once; a slow answer means something else is listening.
CONTROL_TIMEOUT = 5.0


ACME_SHOP_URL = "https://shop.acme-shoes.example"
GLOBEX_SHOP_URL = "https://www.globex-coffee.example"


@dataclass(frozen=True)
class DemoDestination:
    """One destination of the demo and the site whose events it gets."""

    tenant_slug: str
    name: str
    pixel_id: str
    pixel_name: str  # what the sandbox (standing in for Meta) calls the pixel
    site: Site
    enabled: bool = True
    revoked: bool = False  # the sandbox refuses its token from REVOKED_HOURS_AGO on
    # A send-only token (made in the dataset's settings): Meta takes its events but refuses to
    # let it read the pixel, so the card is Healthy without the pixel's name.
    send_only: bool = False
    test_event_code: str = ""
    consent_policy: str = ConsentPolicy.SEND_ALWAYS
    # Which events it sends (the edit page's "Which events to send").
    event_filter: str = EventFilter.ALL
    event_filter_names: str = ""


ACME_WEB_SHOP = DemoDestination(
    ACME[1],
    "Acme web shop",
    "1100000000000001",
    "Acme Shoes Website",
    Site(ACME_SHOP_URL, "web_shop", events_per_hour=9, event_id_prefix="web"),
)
ACME_CHECKOUT = DemoDestination(
    ACME[1],
    "Acme mobile checkout",
    "1100000000000002",
    "Acme Shoes Checkout",
    Site(ACME_SHOP_URL, "thin", events_per_hour=4, event_id_prefix="app"),
    send_only=True,
    # The app's leads go to the client's CRM, not to this pixel: suppressed with the reason.
    event_filter=EventFilter.ALLOW,
    event_filter_names="InitiateCheckout\nPurchase",
)
ACME_OUTLET = DemoDestination(
    ACME[1],
    "Acme outlet store",
    "1100000000000003",
    "Acme Outlet",
    Site(ACME_SHOP_URL, "web_shop", events_per_hour=3, event_id_prefix="outlet"),
    revoked=True,
)
GLOBEX_SHOP = DemoDestination(
    GLOBEX[1],
    "Globex coffee shop",
    "2200000000000001",
    "Globex Coffee Shop",
    Site(
        GLOBEX_SHOP_URL,
        "consent",
        events_per_hour=6,
        event_id_prefix="gx",
        currency="EUR",
        asks_consent=True,
    ),
    test_event_code="TEST24680",
    consent_policy=ConsentPolicy.REQUIRE_CONSENT,
)
GLOBEX_WHOLESALE = DemoDestination(
    GLOBEX[1],
    "Globex wholesale leads",
    "2200000000000002",
    "Globex Wholesale",
    Site(GLOBEX_SHOP_URL, "leads", events_per_hour=2, event_id_prefix="b2b", currency="EUR"),
    enabled=False,
)
DEMO_DESTINATIONS = (ACME_WEB_SHOP, ACME_CHECKOUT, ACME_OUTLET, GLOBEX_SHOP, GLOBEX_WHOLESALE)

# A pixel no destination uses yet, for trying "Add destination" (printed with its token).
TRY_PIXEL_ID = "3300000000000009"
TRY_PIXEL_NAME = "Initech Website"

# The worker's rhythm in the recorded day, and how long an event takes to reach the app.
DISPATCH_EVERY = timedelta(minutes=15)
PASSES_PER_HOUR = timedelta(hours=1) // DISPATCH_EVERY
ARRIVAL_DELAY = timedelta(seconds=2)
# A payment provider's webhook confirms a checkout's order this long after it.
PAYMENT_WEBHOOK_DELAY = timedelta(minutes=20)

# Acme's office: the client excludes it (its Exclusions page), and its staff test the shops from
# there, every few hours, with the app's checkout placing a test order (custom_data.test_order).
ACME_OFFICE = "198.51.100.0/24"
ACME_OFFICE_ADDRESS = "198.51.100.23"
STAFF_VISIT_EVERY_HOURS = 4

# When things happen in the recorded day (hours before now).
REVOKED_HOURS_AGO = 3
META_OUTAGE_HOURS_AGO = 16
REJECTED_EVENT_HOURS_AGO = 7
# The sample CSV of store sales (written to the temp directory for trying the upload, and
# imported once into the web shop's destination so its import page has a run to show).
SAMPLE_CSV_NAME = "capi-demo-store-sales.csv"
SAMPLE_MAPPING = {
    "event_time": "Date",
    "order_id": "Receipt",
    "value": "Total",
    "currency": "Currency",
    "email": "Email",
    "phone": "Phone",
    "first_name": "First name",
    "last_name": "Last name",
    "zip": "Zip",
    "country": "Country",
}
# (days ago, receipt, total, currency, email, phone, first, last, zip, country); the last three
# rows are refused: a sale older than Meta's 62 days, a date nobody can read, no currency.
SAMPLE_SALES = (
    (
        1,
        "S-1001",
        "89.90",
        "USD",
        "olivia.martin@example.com",
        "+1 415 555 0101",
        "Olivia",
        "Martin",
        "94105",
        "US",
    ),
    (2, "S-1002", "129.00", "USD", "liam.chen@example.com", "", "Liam", "Chen", "94110", "US"),
    (3, "S-1003", "59.50", "USD", "", "+1 415 555 0133", "Emma", "Garcia", "94103", "US"),
    (
        9,
        "S-1004",
        "210.00",
        "USD",
        "noah.kim@example.com",
        "+1 628 555 0144",
        "Noah",
        "Kim",
        "94107",
        "US",
    ),
    (20, "S-1005", "45.00", "USD", "ava.patel@example.com", "", "Ava", "Patel", "94117", "US"),
    (
        45,
        "S-1006",
        "99.99",
        "USD",
        "lucas.rossi@example.com",
        "+1 415 555 0166",
        "Lucas",
        "Rossi",
        "94118",
        "US",
    ),
    (70, "S-0907", "75.00", "USD", "mia.nguyen@example.com", "", "Mia", "Nguyen", "94122", "US"),
    (
        None,
        "S-1008",
        "30.00",
        "USD",
        "ethan.brown@example.com",
        "",
        "Ethan",
        "Brown",
        "94123",
        "US",
    ),
    (4, "S-1009", "64.00", "", "zoe.silva@example.com", "", "Zoe", "Silva", "94121", "US"),
)


def sample_store_sales_csv(now: datetime) -> str:
    """The demo's CSV of store sales, dated from ``now`` (so it stays inside Meta's window)."""
    lines = ["Date,Receipt,Store,Total,Currency,Email,Phone,First name,Last name,Zip,Country"]
    for days, receipt, *rest in SAMPLE_SALES:
        if days is None:
            when = "last Tuesday"
        else:
            when = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M")
        lines.append(",".join([when, receipt, "Acme Market Street", *rest]))
    return "\n".join(lines) + "\n"


# The flagship refused Lead's event_source_url: the page's path, where Meta wants its address.
REFUSED_LEAD_SOURCE_URL = "/newsletter"


def demo_token(label: str) -> str:
    """A well-formed, sandbox-only token (``EAA`` + 187 letters and digits) named by ``label``.

    The same label always gives the same token, so a restarted sandbox can be told again which
    tokens the demo's destinations hold. Meta has never seen these.
    """
    body = ""
    counter = 0
    while len(body) < 187:
        digest = hashlib.sha256(f"capi-demo:{label}:{counter}".encode()).hexdigest()
        # Mixed case, like a real token; still letters and digits only.
        body += "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(digest))
        counter += 1
    return "EAA" + body[:187]


def payment_purchase(checkout: dict[str, Any], paid_at: datetime) -> dict[str, Any]:
    """The server Purchase of a paid checkout: what the order kept (email, customer id, the
    checkout's IP and browser, its cart), without browser cookies."""
    kept = checkout["user_data"]
    return {
        "event_name": "Purchase",
        "event_time": int(paid_at.timestamp()),
        "event_id": f"order-paid-{checkout['event_id']}",
        "action_source": "website",
        "event_source_url": checkout["event_source_url"].split("?")[0],
        "user_data": {
            key: kept[key]
            for key in ("email", "external_id", "client_ip_address", "client_user_agent")
            if key in kept
        },
        "custom_data": dict(checkout.get("custom_data") or {}),
    }


def replacement_token(spec: DemoDestination) -> str:
    """A second token the sandbox accepts for ``spec``'s pixel: the fix for the revoked one."""
    return demo_token(f"{spec.pixel_id}:replacement")


TRY_TOKEN = demo_token(f"{TRY_PIXEL_ID}:try")


# --- the sandbox's control API ---------------------------------------------------------------


class SandboxError(Exception):
    """The sandbox stopped answering, or refused what the demo asked of it."""


class SandboxControl:
    """The demo's handle on the sandbox's control API (``<base URL>/_sandbox/…``).

    This is not the Graph API (``graph.py`` stays the only code that talks to that): it is how
    the demo tells the sandbox which pixels exist and which token Meta has revoked.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    @classmethod
    def find(cls, base_url: str) -> SandboxControl | None:
        """The sandbox at ``base_url``, or None when nothing there answers as a sandbox."""
        control = cls(base_url)
        try:
            answer = requests.get(f"{control.base_url}/_sandbox/", timeout=CONTROL_TIMEOUT)
            is_sandbox = answer.ok and answer.json().get("sandbox") is True
        except (requests.RequestException, ValueError, AttributeError):
            return None
        return control if is_sandbox else None

    def _post(self, route: str, body: dict[str, Any]) -> None:
        url = f"{self.base_url}/_sandbox/{route}"
        # Messages name the route, never the body we sent: it may hold a token.
        try:
            answer = requests.post(url, json=body, timeout=CONTROL_TIMEOUT)
        except requests.RequestException as problem:
            raise SandboxError(f"{url}: {type(problem).__name__}") from None
        if not answer.ok:
            raise SandboxError(f"{url} answered HTTP {answer.status_code}")

    def register_pixel(
        self, pixel_id: str, name: str, tokens: Sequence[str], *, send_only: bool = False
    ) -> None:
        """Make ``pixel_id`` exist under ``name``, usable with ``tokens`` (to send only)."""
        key = "send_only_tokens" if send_only else "tokens"
        self._post("pixels", {"pixel_id": pixel_id, "name": name, key: list(tokens)})

    def revoke(self, token: str) -> None:
        """Make Meta refuse ``token`` from now on (error 190)."""
        self._post("revoke", {"token": token, "reason": "revoked"})

    def fail_next_send(self, error: sandbox_errors.GraphAnswerError) -> None:
        """Answer the next POST of events with Meta's ``error`` (health checks use GET)."""
        self._post(
            "answers",
            {
                "status": error.http_status,
                "error": error.body()["error"],
                "method": "POST",
                "times": 1,
            },
        )


# --- the command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One sample event reaching the app at ``moment``."""

    moment: datetime
    destination: Destination
    event: dict[str, Any]
    refused_by_meta: bool = False
    # The payment provider's webhook confirming this checkout: ``Command.confirm_payment``.
    payment_webhook: bool = False


@dataclass
class DemoUsers:
    """The demo's logins."""

    admin: Any
    agency: Any
    client: Any


class Command(BaseCommand):
    help = (
        "Create the demo: two clients, an agency and a client login, destinations in every "
        "state pointing at the Graph API sandbox, and a day of sample events (idempotent). "
        "Never run this on a production site."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=int,
            default=HISTORY_HOURS,
            help="Hours of sample history to record when there is none yet (default 24).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # A day of deliveries logs hundreds of lines; the summary at the end says what matters.
        with _quiet_logs(unless=options["verbosity"] >= 2):
            try:
                self.create_demo(hours=max(1, options["hours"]))
            except SandboxError as problem:
                raise CommandError(
                    f"The Graph API sandbox failed during the demo ({problem}). Restart it and "
                    "run capi_demo again."
                ) from None

    def create_demo(self, *, hours: int) -> None:
        """Everything the command does, in order; see the module docstring."""
        base_url = str(app_settings.GRAPH_API_BASE_URL)
        sandbox = SandboxControl.find(base_url)
        users = self.ensure_users()
        tenants = self.ensure_tenants(users)
        if sandbox is not None:
            self.register_pixels(sandbox)
        demo = self.ensure_destinations(tenants, users)
        if sandbox is not None:
            # New destinations learn their pixel's name now, as a save in the pages does.
            never_checked = [d.pk for d in demo.values() if d.health_checked_at is None]
            health.check_all_destinations(destination_ids=never_checked)

        since = clock.now() - timedelta(hours=HISTORY_HOURS)
        has_recent_events = Event.objects.filter(
            destination__in=demo.values(), created_at__gte=since
        ).exists()
        if has_recent_events:
            self.stdout.write("Sample events from the last 24 hours exist: none added.")
        else:
            recorded = self.record_history(demo, sandbox, users, hours=hours)
            self.stdout.write(f"Recorded {recorded} sample events over {hours} hours.")

        sample_csv = self.import_store_sales(demo[ACME_WEB_SHOP])

        if sandbox is not None:
            self.revoke_old_tokens(sandbox, demo)
            dispatch.dispatch_pending()
            health.check_all_destinations(destination_ids=[d.pk for d in demo.values()])
            # Meta's own score beside ours at once, as the hourly task would fetch it.
            match_quality.fetch_all_match_quality(destination_ids=[d.pk for d in demo.values()])
        self.report(demo, users, sandbox, base_url)
        self.stdout.write(
            f'  Import store sales: on "{ACME_WEB_SHOP.name}", Import conversions, and upload'
        )
        self.stdout.write(f"    {sample_csv}")

    def import_store_sales(self, shop: Destination) -> Path:
        """Write the sample CSV of store sales; import it once (a run for the import page)."""
        path = Path(tempfile.gettempdir()) / SAMPLE_CSV_NAME
        path.write_text(sample_store_sales_csv(clock.now()), encoding="utf-8")
        if not ImportRun.objects.filter(destination=shop).exists():
            _, summary = imports.record_run(shop, path, SAMPLE_MAPPING, file_name=SAMPLE_CSV_NAME)
            self.stdout.write(
                f"Imported {summary.stored} store sales from {SAMPLE_CSV_NAME} "
                f"({summary.rejected} rows rejected, as the import page shows)."
            )
        return path

    # --- people and tenants --------------------------------------------------------------------

    def ensure_users(self) -> DemoUsers:
        """The superuser, the agency user and the client user (passwords set on creation)."""
        return DemoUsers(
            admin=self._user(*DEMO_ADMIN, is_staff=True, is_superuser=True),
            agency=self._user(*AGENCY_LOGIN),
            client=self._user(*CLIENT_LOGIN),
        )

    def _user(self, username: str, password: str, **flags: bool) -> Any:
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            **{user_model.USERNAME_FIELD: username}, defaults=flags
        )
        if created:
            user.set_password(password)
            user.save()
        return user

    def ensure_tenants(self, users: DemoUsers) -> dict[str, Tenant]:
        """Both clients; the agency administers both, the client views Acme Shoes only.

        Acme Shoes excludes its office's addresses, from its creation on.
        """
        tenants = {}
        for name, slug in (ACME, GLOBEX):
            tenants[slug], created = Tenant.objects.get_or_create(
                slug=slug, defaults={"name": name}
            )
            Membership.objects.get_or_create(
                user=users.agency, tenant=tenants[slug], defaults={"role": Role.ADMIN}
            )
            if created and slug == ACME[1]:
                # As the agency would on the client's Exclusions page (test orders are
                # excluded by default: the flag custom_data.test_order).
                exclusions.update_exclusions(
                    tenants[slug], actor=users.agency, excluded_networks=ACME_OFFICE
                )
        Membership.objects.get_or_create(
            user=users.client, tenant=tenants[ACME[1]], defaults={"role": Role.VIEWER}
        )
        return tenants

    # --- destinations and the sandbox ----------------------------------------------------------

    def register_pixels(self, sandbox: SandboxControl) -> None:
        """Tell the sandbox which pixels exist and which tokens may use them."""
        for spec in DEMO_DESTINATIONS:
            tokens = [demo_token(spec.pixel_id)]
            if spec.revoked:
                tokens.append(replacement_token(spec))
            sandbox.register_pixel(spec.pixel_id, spec.pixel_name, tokens, send_only=spec.send_only)
        sandbox.register_pixel(TRY_PIXEL_ID, TRY_PIXEL_NAME, [TRY_TOKEN])

    def ensure_destinations(
        self, tenants: dict[str, Tenant], users: DemoUsers
    ) -> dict[DemoDestination, Destination]:
        """Every demo destination, created through the same service the pages use if missing.

        One that exists is left as the user left it (enabled or not, token replaced or not).
        """
        found = {}
        for spec in DEMO_DESTINATIONS:
            tenant = tenants[spec.tenant_slug]
            destination = Destination.objects.filter(tenant=tenant, pixel_id=spec.pixel_id).first()
            if destination is None:
                destination, _secret = destinations.create_destination(
                    tenant,
                    actor=users.agency,
                    name=spec.name,
                    pixel_id=spec.pixel_id,
                    access_token=demo_token(spec.pixel_id),
                    test_event_code=spec.test_event_code,
                    consent_policy=spec.consent_policy,
                    allowed_origins=spec.site.url,
                    event_filter=spec.event_filter,
                    event_filter_names=spec.event_filter_names,
                )
                if not spec.enabled:
                    destinations.set_enabled(destination, False, actor=users.agency)
            found[spec] = destination
        return found

    def revoke_old_tokens(
        self, sandbox: SandboxControl, demo: dict[DemoDestination, Destination]
    ) -> None:
        """Have Meta refuse the revoked destination's token, unless someone replaced it."""
        for spec, destination in demo.items():
            destination.refresh_from_db()
            if spec.revoked and destination.access_token == demo_token(spec.pixel_id):
                sandbox.revoke(destination.access_token)

    # --- a day of events -----------------------------------------------------------------------

    def record_history(
        self,
        demo: dict[DemoDestination, Destination],
        sandbox: SandboxControl | None,
        users: DemoUsers,
        *,
        hours: int,
    ) -> int:
        """Record ``hours`` of events as they would have arrived, and deliver them as they go.

        The app clock is held at each event's arrival and at each dispatch pass (every
        ``DISPATCH_EVERY``), so events, attempts and charts carry the times they would have
        had. Without a sandbox, events are recorded but not sent. Returns how many events were
        recorded.
        """
        traffic = SampleTraffic()
        web_shop = demo[ACME_WEB_SHOP]
        recorded = 0
        for hours_ago, hour in _past_hours(clock.now(), hours):
            if sandbox is not None and hours_ago == REVOKED_HOURS_AGO:
                self.revoke_old_tokens(sandbox, demo)
            arrivals = self._arrivals(demo, traffic, hour, hours_ago)
            for tick in range(1, PASSES_PER_HOUR + 1):
                pass_at = hour + tick * DISPATCH_EVERY
                while arrivals and arrivals[0].moment < pass_at:
                    self._receive(arrivals.pop(0), sandbox)
                    recorded += 1
                if sandbox is None:
                    continue
                with clock.held_at(pass_at):
                    if hours_ago == META_OUTAGE_HOURS_AGO and tick == 1:
                        sandbox.fail_next_send(sandbox_errors.server_failure())
                        dispatch.dispatch_pending(web_shop.pk)
                    dispatch.dispatch_pending()
        if sandbox is not None:
            destinations.send_test_event(demo[GLOBEX_SHOP], actor=users.agency)
        return recorded

    def _arrivals(
        self,
        demo: dict[DemoDestination, Destination],
        traffic: SampleTraffic,
        hour: datetime,
        hours_ago: int,
    ) -> list[Arrival]:
        """The hour's events of every destination, in the order they arrive."""
        arrivals = [
            Arrival(moment, destination, event)
            for spec, destination in demo.items()
            for moment, event in traffic.events(spec.site, hour)
        ]
        arrivals += self._payment_webhooks(arrivals, demo[ACME_WEB_SHOP])
        if hours_ago % STAFF_VISIT_EVERY_HOURS == 2:
            arrivals += self._staff_tests(demo, hour)
        if hours_ago == REJECTED_EVENT_HOURS_AGO:
            # A newsletter form that sends the page's path instead of its address. Our checks
            # warn (an event is not refused for it here); Meta refuses a website event without
            # an http(s):// event_source_url, and refuses it again until the site sends one.
            moment = hour + timedelta(minutes=42)
            lead = traffic.event(ACME_WEB_SHOP.site, "Lead", moment)
            lead["event_source_url"] = REFUSED_LEAD_SOURCE_URL
            arrivals.append(Arrival(moment, demo[ACME_WEB_SHOP], lead, refused_by_meta=True))
        return sorted(arrivals, key=lambda arrival: arrival.moment)

    @staticmethod
    def _staff_tests(demo: dict[DemoDestination, Destination], hour: datetime) -> list[Arrival]:
        """Acme's staff check the web shop from the office and place a test order in the app:
        the client's exclusions suppress both, with the reason, and the cards count them.
        (Made here, not drawn from the sample traffic, so the rest of the day stays the same.)"""
        visit_at, order_at = hour + timedelta(minutes=11), hour + timedelta(minutes=37)
        staff = {
            "client_ip_address": ACME_OFFICE_ADDRESS,
            "client_user_agent": USER_AGENTS[0],
            "email": "qa.team@example.com",
        }
        visit = {
            "event_name": "ViewContent",
            "event_time": int(visit_at.timestamp()),
            "event_id": f"staff-{visit_at:%m%d%H%M}",
            "action_source": "website",
            "event_source_url": f"{ACME_SHOP_URL}/products/boot-trail",
            "user_data": staff,
        }
        test_order = {
            "event_name": "Purchase",
            "event_time": int(order_at.timestamp()),
            "event_id": f"order-test-{order_at:%m%d%H%M}",
            "action_source": "website",
            "event_source_url": f"{ACME_SHOP_URL}/checkout",
            "user_data": staff,
            "custom_data": {"value": 1.0, "currency": "USD", "test_order": True},
        }
        return [
            Arrival(visit_at, demo[ACME_WEB_SHOP], visit),
            Arrival(order_at, demo[ACME_CHECKOUT], test_order),
        ]

    @staticmethod
    def _payment_webhooks(arrivals: list[Arrival], web_shop: Destination) -> list[Arrival]:
        """The payment provider's webhook for every third checkout of the web shop: a server
        Purchase 20 minutes later with what the order kept (email, customer id, the checkout's
        IP and browser) but no browser cookies. The app fills in the fbc/fbp it saw with that
        customer at checkout (``click_memory``), and the event says so (``click_id_filled``)."""
        webhooks = []
        checkouts = [
            arrival
            for arrival in arrivals
            if arrival.destination.pk == web_shop.pk
            and arrival.event["event_name"] == "InitiateCheckout"
            and "email" in arrival.event["user_data"]
            and "fbp" in arrival.event["user_data"]
        ]
        for checkout in checkouts[::3]:
            paid_at = checkout.moment + PAYMENT_WEBHOOK_DELAY
            webhooks.append(Arrival(paid_at, web_shop, checkout.event, payment_webhook=True))
        return webhooks

    def confirm_payment(
        self, destination: Destination, checkout: dict[str, Any], *, paid_at: datetime
    ) -> None:
        """The payment provider confirms the order of ``checkout`` (an InitiateCheckout event).

        Here its Purchase is recorded directly. The demo site overrides this
        (``project/shop/management/commands/capi_demo.py``): there the webhook marks the shop's
        ``Order`` paid, and the site's conversion rule records the same Purchase after the
        commit, as a host site would (README → "Conversion rules").
        """
        track_many(destination, [payment_purchase(checkout, paid_at)])

    def _receive(self, arrival: Arrival, sandbox: SandboxControl | None) -> None:
        destination = arrival.destination
        with clock.held_at(arrival.moment + ARRIVAL_DELAY):
            if arrival.payment_webhook:
                self.confirm_payment(destination, arrival.event, paid_at=arrival.moment)
                return
            if not (arrival.refused_by_meta and sandbox is not None):
                track_many(destination, [arrival.event])
                return
            # Alone in its request, so Meta's refusal (for its data, not made up for the demo)
            # fails this event and no other.
            dispatch.dispatch_pending(destination.pk)
            track_many(destination, [arrival.event])
            dispatch.dispatch_pending(destination.pk)

    # --- what the user reads -------------------------------------------------------------------

    def report(
        self,
        demo: dict[DemoDestination, Destination],
        users: DemoUsers,
        sandbox: SandboxControl | None,
        base_url: str,
    ) -> None:
        """Print the logins, the destinations' states and what to try first."""
        write = self.stdout.write
        write("")
        write("Demo logins:")
        for (username, password), role in (
            (AGENCY_LOGIN, "the agency: admin of Acme Shoes and Globex Coffee"),
            (CLIENT_LOGIN, "a client: viewer of Acme Shoes only"),
            (DEMO_ADMIN, "superuser, also for /admin/"),
        ):
            write(f"  {username + ' / ' + password:<26} {role}")
        write("")
        write("Destinations:")
        for destination in demo.values():
            destination.refresh_from_db()
            state = destination.get_health_display()
            if not destination.enabled:
                state += ", sending off"
            write(f"  {destination.tenant.name:<14} {destination.name:<24} {state}")
        if sandbox is None:
            self.stderr.write(
                self.style.WARNING(
                    f"\nNo Graph API sandbox answers at {base_url}: the demo data was created, "
                    "but nothing was sent and no health check ran. Start one with "
                    "`python manage.py capi_sandbox` (make run does) and run capi_demo again."
                )
            )
            return
        write("")
        write("Try it (sandbox-only tokens; Meta has never seen them):")
        write(f'  Fix the red "{ACME_OUTLET.name}" card: Replace token, and paste')
        write(f"    {replacement_token(ACME_OUTLET)}")
        write(f"  Add a destination: Pixel ID {TRY_PIXEL_ID}, token")
        write(f"    {TRY_TOKEN}")


@contextmanager
def _quiet_logs(*, unless: bool) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("capi_destinations", "django-q")]
    levels = [logger.level for logger in loggers]
    if not unless:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _past_hours(now: datetime, hours: int) -> Iterator[tuple[int, datetime]]:
    """``(hours ago, start)`` of the last ``hours`` whole hours before ``now``, oldest first."""
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    for hours_ago in range(hours, 0, -1):
        yield hours_ago, this_hour - timedelta(hours=hours_ago)
