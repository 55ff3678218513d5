"""Believable sample events for ``capi_demo``: well or poorly instrumented, depending on the site.

Events come out as a developer would hand them to ``capi_destinations.track_many`` (raw email,
phone and names, which ingestion normalizes and hashes). Everyone in them is made up; email
addresses are on example.com, IP addresses in the documentation range 203.0.113.0/24.
(The leading underscore keeps Django from taking this module for a command.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Which events each kind of site sends, with their weights.
PROFILES: dict[str, list[tuple[str, int]]] = {
    # A shop with the Pixel and the server both instrumented well.
    "web_shop": [
        ("PageView", 40),
        ("ViewContent", 25),
        ("AddToCart", 15),
        ("InitiateCheckout", 10),
        ("Purchase", 10),
    ],
    # A checkout that passes on little more than the visitor's IP and browser.
    "thin": [("InitiateCheckout", 4), ("Purchase", 5), ("Lead", 1)],
    # A shop whose visitors answer a consent banner.
    "consent": [("PageView", 45), ("ViewContent", 30), ("AddToCart", 15), ("Purchase", 10)],
    # A B2B lead form.
    "leads": [("Lead", 4), ("CompleteRegistration", 1)],
}

FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
LAST_NAMES = ["Silva", "Okafor", "Müller", "Nguyen", "Rossi", "Kowalski", "Haddad", "Berg"]
CITIES = [("Berlin", "10115", "de"), ("Lyon", "69001", "fr"), ("Austin", "78701", "us")]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
]
PRODUCTS = [("sneaker-aero", 89.0), ("boot-trail", 149.0), ("sandal-breeze", 39.5)]
# Share of the day's traffic in each hour (UTC): low at night, high in the evening.
DAY_SHAPE: tuple[float, ...] = (0.3, 0.2, 0.2, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.0, 1.1, 1.1)
DAY_SHAPE += (1.1, 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.7, 1.6, 1.3, 0.9, 0.5)
# Share of a "thin" checkout's purchases that forget the currency (rejected, never sent).
FORGOTTEN_CURRENCY = 0.12
# Share of visitors who refuse advertising consent on a site that asks.
CONSENT_DENIED = 0.15


@dataclass(frozen=True)
class Site:
    """A site sending events: its address, what it sends and how much."""

    url: str
    profile: str  # a key of PROFILES
    events_per_hour: int
    event_id_prefix: str  # keeps event_ids of different sites apart
    currency: str = "USD"
    asks_consent: bool = False


class SampleTraffic:
    """Makes a site's events for an hour. The draws are seeded: every run makes the same day."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def hourly_count(self, site: Site, hour: datetime) -> int:
        """How many events ``site`` sends in the hour starting at ``hour``."""
        shape = DAY_SHAPE[hour.hour]
        return max(1, round(site.events_per_hour * shape * self.rng.uniform(0.7, 1.3)))

    def events(self, site: Site, hour: datetime) -> list[tuple[datetime, dict[str, Any]]]:
        """The hour's events of ``site`` with the moment each happened, in no order."""
        names, weights = zip(*PROFILES[site.profile], strict=True)
        made = []
        for _ in range(self.hourly_count(site, hour)):
            moment = hour + timedelta(seconds=self.rng.randrange(0, 3540))
            made.append((moment, self.event(site, self.rng.choices(names, weights)[0], moment)))
        return made

    def event(self, site: Site, event_name: str, moment: datetime) -> dict[str, Any]:
        """One ``event_name`` event of ``site`` that happened at ``moment``."""
        rng = self.rng
        self.serial += 1
        product, price = rng.choice(PRODUCTS)
        url = f"{site.url}/products/{product}" if event_name != "PageView" else f"{site.url}/"
        user_data: dict[str, Any] = {
            "client_ip_address": f"203.0.113.{rng.randrange(1, 255)}",
            "client_user_agent": rng.choice(USER_AGENTS),
        }
        event: dict[str, Any] = {
            "event_name": event_name,
            "event_time": int(moment.timestamp()),
            "event_id": f"{site.event_id_prefix}-{moment:%m%d%H%M%S}-{self.serial}",
            "action_source": "website",
            "event_source_url": url,
            "user_data": user_data,
        }
        self._identify(site, event_name, event)
        if event_name in ("AddToCart", "InitiateCheckout", "Purchase"):
            quantity = rng.randint(1, 2)
            event["custom_data"] = {
                "value": round(price * quantity, 2),
                "currency": site.currency,
                "contents": [{"id": product, "quantity": quantity}],
                "content_type": "product",
            }
        if event_name == "Purchase":
            # The order number: the id the Pixel gets too, so Meta can deduplicate.
            event["event_id"] = f"order-{site.event_id_prefix}{self.serial:05d}"
            if site.profile == "thin" and rng.random() < FORGOTTEN_CURRENCY:
                del event["custom_data"]["currency"]
        if site.asks_consent:
            answer = "denied" if rng.random() < CONSENT_DENIED else "granted"
            event["consent"] = {"ad_storage": answer, "ad_user_data": answer, "region": "DE"}
        return event

    def _identify(self, site: Site, event_name: str, event: dict[str, Any]) -> None:
        # How much of the visitor a site passes on is what its match quality comes from.
        rng = self.rng
        user_data = event["user_data"]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}{rng.randrange(1, 99)}@example.com"
        knows_customer = event_name in ("InitiateCheckout", "Purchase", "Lead")
        if site.profile == "thin":
            if rng.random() < 0.3:
                user_data["email"] = email
            return
        user_data["fbp"] = f"fb.1.{event['event_time'] * 1000}.{rng.randrange(10**9, 10**10)}"
        if rng.random() < 0.55:
            # Visitors who came from an ad: the click id in the landing URL becomes fbc.
            event["event_source_url"] += f"?fbclid=IwAR{rng.randrange(10**12, 10**13)}demo"
        if knows_customer or rng.random() < 0.25:
            user_data["email"] = email
            user_data["external_id"] = f"customer-{rng.randrange(1000, 9999)}"
        if site.profile == "leads":
            user_data["phone"] = f"+49 30 {rng.randrange(1000000, 9999999)}"
        elif knows_customer:
            city, postal_code, country = rng.choice(CITIES)
            user_data.update(first_name=first, last_name=last, city=city)
            user_data.update(zip=postal_code, country=country)
            if rng.random() < 0.7:
                user_data["phone"] = f"+1 512 555 {rng.randrange(1000, 9999)}"
