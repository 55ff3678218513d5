"""The one door to Slack and webhook receivers: URL safety, signing, and the POST itself.

It knows nothing of the models: it takes a URL, a body and headers, and answers with an
:class:`Answer` or raises :class:`TransportError`. A channel's URL is checked when it is saved
and again before every send (DNS may change in between): ``https`` only unless
``ALERT_ALLOW_HTTP``, and never a host that resolves to a private, loopback, link-local,
multicast or reserved address unless ``ALERT_ALLOW_PRIVATE_ADDRESSES``. A host name is
resolved once per send and the request goes to the address that was checked, named in TLS
(SNI and certificate) and in ``Host`` as the URL names it: a name whose DNS answer changes
between the check and the connection (DNS rebinding) cannot turn an alert into a request to
the site's own network. Redirects are never followed (a 3xx is a failed attempt). Error texts
name the host only: a Slack URL's path is itself a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from capi_destinations.conf import app_settings

SIGNATURE_HEADER = "X-Capi-Signature"
TIMESTAMP_HEADER = "X-Capi-Timestamp"
# How much of a receiver's answer is kept and shown.
ANSWER_SNIPPET_CHARS = 300


class UnsafeURL(ValueError):
    """A channel URL the settings do not allow (scheme, host, or where the host resolves)."""


class TransportError(Exception):
    """A send that got no usable answer: refused URL, no connection, timeout."""

    def __init__(self, message: str, *, duration_ms: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.duration_ms = duration_ms


@dataclass(frozen=True)
class Answer:
    """What a receiver answered (no status code for a mail server), and whether it took it."""

    status_code: int | None
    body: str
    duration_ms: int
    ok: bool


def host_of(url: str) -> str:
    """The host of ``url`` (for messages: never the path, which may hold a Slack token)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global also refuses what is neither private nor public, such as the shared address
    # space of carrier-grade NAT (100.64.0.0/10), which is_private leaves out.
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def refuse_unsafe_url(url: str) -> str | None:
    """Raise :class:`UnsafeURL` unless the settings allow sending to ``url``.

    Resolves the host name: every address it resolves to must be public (unless
    ``ALERT_ALLOW_PRIVATE_ADDRESSES``). Returns the address to connect to, the first checked
    one; None when the host is an IP address already.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("This is not a web address.") from None
    allowed_schemes = ("https", "http") if app_settings.ALERT_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed_schemes:
        raise UnsafeURL("The address must start with https://.")
    host = parts.hostname
    if not host or parts.username or parts.password:
        raise UnsafeURL("The address needs a host name (and no user name or password).")
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        if app_settings.ALERT_ALLOW_PRIVATE_ADDRESSES:
            return None  # nothing to check: connect by name, as the settings allow
        raise UnsafeURL(f"The host {host} could not be found.") from None
    addresses = [str(info[4][0]) for info in infos]
    if not app_settings.ALERT_ALLOW_PRIVATE_ADDRESSES and (
        not addresses or not all(_address_is_public(address) for address in addresses)
    ):
        raise UnsafeURL(
            f"The host {host} resolves to a private, loopback, link-local or reserved address."
        )
    if _is_ip_address(host) or not addresses:
        return None
    return addresses[0]


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Capi-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signed_headers(secret: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The timestamp and signature headers of a webhook request."""
    stamp = str(timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(secret, stamp, body)}


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    """POST ``body`` (JSON) to ``url`` after checking it; never follows a redirect.

    Raises :class:`TransportError` for a refused URL or no answer; any HTTP answer (even a 500)
    is an :class:`Answer`.
    """
    host = host_of(url)
    try:
        address = refuse_unsafe_url(url)
    except UnsafeURL as error:
        raise TransportError(f"Not sent: {error}") from None
    timeout = (float(app_settings.ALERT_CONNECT_TIMEOUT), float(app_settings.ALERT_READ_TIMEOUT))
    started = time.monotonic()
    try:
        with requests.Session() as session:
            if address is not None:
                url, pinned_headers = _pin(session, url, address)
                headers = {**(headers or {}), **pinned_headers}
            response = session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=timeout,
                allow_redirects=False,
            )
    except requests.RequestException as exc:
        raise TransportError(
            _describe(exc, host, timeout), duration_ms=_elapsed_ms(started)
        ) from None
    text = response.content[: ANSWER_SNIPPET_CHARS * 4].decode("utf-8", "replace")
    # Only a 2xx counts as taken; a redirect is not followed and counts as failed.
    return Answer(
        response.status_code,
        text[:ANSWER_SNIPPET_CHARS],
        _elapsed_ms(started),
        ok=200 <= response.status_code < 300,
    )


class _NamedHostAdapter(HTTPAdapter):
    """Connects wherever the URL says (the checked address) and speaks TLS to ``host``: the
    name sent in SNI and checked against the certificate is the channel's, not the address."""

    def __init__(self, host: str) -> None:
        self._host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(server_hostname=self._host, assert_hostname=self._host)
        super().init_poolmanager(*args, **kwargs)


def _pin(session: requests.Session, url: str, address: str) -> tuple[str, dict[str, str]]:
    """``url`` with its host replaced by ``address``, and the ``Host`` header that names it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    named = host.encode("idna").decode("ascii")
    literal = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    if parts.scheme == "https":
        session.mount("https://", _NamedHostAdapter(named))
    pinned = urlunsplit((parts.scheme, literal + port, parts.path, parts.query, ""))
    return pinned, {"Host": named + port}


def _describe(exc: requests.RequestException, host: str, timeout: tuple[float, float]) -> str:
    # requests' own messages quote the whole URL (a Slack URL's path is its secret): name the
    # host and the kind of failure only.
    if isinstance(exc, requests.ConnectTimeout):
        return f"No connection to {host} within {timeout[0]:g} s."
    if isinstance(exc, requests.Timeout):
        return f"No answer from {host} within {timeout[1]:g} s."
    if isinstance(exc, requests.ConnectionError):
        return f"Could not connect to {host}."
    return f"Could not send to {host} ({type(exc).__name__})."


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
