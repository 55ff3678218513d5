"""Which recorded events a destination sends: its event filter, and the client's exclusions.

A destination sends all events, only the names listed, or all but those, and may skip Purchases
worth less than a minimum. A client (tenant) excludes staff traffic (events recorded in a request
of a logged-in staff user), address ranges (the office, the agency) and test orders (a flag in
``custom_data``). Events caught by either are recorded as ``suppressed`` with the reason, never
dropped unseen: the event log shows them and why.

Pure functions over plain values: no database, no network.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import TextChoices

__all__ = [
    "EventFilter",
    "Routing",
    "lines",
    "parse_networks",
    "validate_event_names",
    "validate_networks",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EventFilter(TextChoices):
    ALL = "all", "All events"
    ALLOW = "allow", "Only the events listed"
    DENY = "deny", "All but the events listed"


def lines(text: str) -> list[str]:
    """The non-blank lines of a text field, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def parse_networks(text: str) -> list[_Network]:
    """The address ranges of a text field (one per line); ValueError names a bad line."""
    networks = []
    for line in lines(text):
        try:
            networks.append(ipaddress.ip_network(line, strict=False))
        except ValueError:
            raise ValueError(line) from None
    return networks


def validate_networks(text: str) -> None:
    """A model validator: every line is an IP address or a range (CIDR)."""
    try:
        parse_networks(text)
    except ValueError as error:
        raise ValidationError(
            "'%(line)s' is not an IP address or range; write one per line, e.g. "
            "203.0.113.7, 203.0.113.0/24 or 2001:db8::/32.",
            code="invalid_network",
            params={"line": str(error)[:100]},
        ) from None


def validate_event_names(text: str) -> None:
    """A model validator: event names are at most 50 characters (Meta's limit is 50 bytes)."""
    for line in lines(text):
        if len(line.encode()) > 50:
            raise ValidationError(
                "'%(line)s' is longer than an event name can be (50 bytes).",
                code="event_name_too_long",
                params={"line": line[:60]},
            )


@dataclass(frozen=True)
class Routing:
    """A destination's filter and its client's exclusions, read once per batch."""

    event_filter: str = EventFilter.ALL
    event_names: frozenset[str] = frozenset()
    minimum_purchase_value: Decimal | None = None
    exclude_staff: bool = False
    excluded_networks: tuple[_Network, ...] = ()
    test_flag: str = ""

    @classmethod
    def of(
        cls,
        *,
        event_filter: str,
        event_filter_names: str,
        minimum_purchase_value: Decimal | None,
        exclude_staff: bool,
        excluded_networks: str,
        test_flag: str,
    ) -> Routing:
        try:
            networks = tuple(parse_networks(excluded_networks))
        except ValueError:
            networks = ()  # refused when saved; a row written around validation excludes none
        return cls(
            event_filter=event_filter,
            event_names=frozenset(lines(event_filter_names)),
            minimum_purchase_value=minimum_purchase_value,
            exclude_staff=exclude_staff,
            excluded_networks=networks,
            test_flag=test_flag.strip(),
        )

    @property
    def is_open(self) -> bool:
        """Nothing to check: every event is sent (spares the work per event)."""
        return (
            self.event_filter == EventFilter.ALL
            and self.minimum_purchase_value is None
            and not self.exclude_staff
            and not self.excluded_networks
            and not self.test_flag
        )

    def suppression(self, payload: Mapping[str, Any], *, staff_request: bool) -> str | None:
        """Why this event is not sent (a reason for the event log), or None to send it."""
        event_name = payload.get("event_name")
        if self.event_filter == EventFilter.ALLOW and event_name not in self.event_names:
            return f"suppressed: {event_name} is not among the events this destination sends"
        if self.event_filter == EventFilter.DENY and event_name in self.event_names:
            return f"suppressed: this destination does not send {event_name} events"
        custom_data = payload.get("custom_data")
        custom_data = (
            custom_data if type(custom_data) is dict or isinstance(custom_data, Mapping) else {}
        )
        if self.minimum_purchase_value is not None and event_name == "Purchase":
            value = _number(custom_data.get("value"))
            if value is not None and value < self.minimum_purchase_value:
                return (
                    f"suppressed: a Purchase of {value} is below this destination's minimum "
                    f"of {self.minimum_purchase_value}"
                )
        if self.test_flag and _is_true(custom_data.get(self.test_flag)):
            return f"suppressed: a test order (custom_data.{self.test_flag} is set)"
        if self.exclude_staff and staff_request:
            return "suppressed: recorded by a logged-in staff user (the client excludes staff)"
        network = self._excluded_network(payload.get("user_data"))
        if network is not None:
            return f"suppressed: from {network}, an address range the client excludes"
        return None

    def _excluded_network(self, user_data: Any) -> _Network | None:
        if not self.excluded_networks or not isinstance(user_data, Mapping):
            return None
        address = user_data.get("client_ip_address")
        if not isinstance(address, str):
            return None
        ip = _address(address)
        if ip is None:
            return None
        return next((net for net in self.excluded_networks if ip in net), None)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a client_ip_address, also with the parameter builder's appendix."""
    for candidate in (text, text.rpartition(".")[0]):
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)
