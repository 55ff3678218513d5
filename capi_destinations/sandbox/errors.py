"""Meta-shaped error answers the sandbox gives, one constructor per situation.

Each answer is an HTTP status plus Meta's body ``{"error": {...}}``. Codes, subcodes and types
follow the fact sheet (``shared/capi/FACTS.md`` §10, §11, §14) and real bodies quoted in public
code; like Meta, no answer names the event of ``data`` at fault. docs/META.md ("Sandbox
answers") gives each answer's source, or says it is *unconfirmed*.
"""

from __future__ import annotations

import os
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from typing import Any


def new_fbtrace_id() -> str:
    """A random support id shaped like Meta's ``fbtrace_id`` (11 URL-safe characters)."""
    return urlsafe_b64encode(os.urandom(9)).decode("ascii")[:11]


@dataclass(frozen=True)
class GraphAnswerError:
    """One error answer: HTTP status, Meta's error fields, and any extra response headers."""

    http_status: int
    code: int
    message: str
    type: str = "OAuthException"
    subcode: int | None = None
    user_title: str | None = None
    user_msg: str | None = None
    is_transient: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """Meta's JSON error body, with a fresh ``fbtrace_id``."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "is_transient": self.is_transient,
            "fbtrace_id": new_fbtrace_id(),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        return {"error": error}


# --- Tokens --------------------------------------------------------------------------------------


def missing_token() -> GraphAnswerError:
    """No access token anywhere in the request (code 104)."""
    return GraphAnswerError(400, 104, "An access token is required to request this resource.")


def unparseable_token() -> GraphAnswerError:
    """A token that does not look like one, or that Meta does not know (code 190)."""
    return GraphAnswerError(400, 190, "Invalid OAuth access token - Cannot parse access token")


def revoked_token() -> GraphAnswerError:
    """A token that was revoked (code 190, no subcode)."""
    return GraphAnswerError(
        400,
        190,
        "Error validating access token: The session has been invalidated because the token "
        "was revoked.",
    )


def expired_token() -> GraphAnswerError:
    """A token past its expiry (code 190, subcode 463)."""
    return GraphAnswerError(
        400, 190, "Error validating access token: Session has expired.", subcode=463
    )


def missing_appsecret_proof() -> GraphAnswerError:
    """The pixel's app requires ``appsecret_proof`` and the request has none (code 100)."""
    return GraphAnswerError(
        400,
        100,
        "API calls from the server require an appsecret_proof argument",
        type="GraphMethodException",
    )


def invalid_appsecret_proof() -> GraphAnswerError:
    """``appsecret_proof`` does not match the token and the app secret (code 100)."""
    return GraphAnswerError(
        400,
        100,
        "Invalid appsecret_proof provided in the API argument",
        type="GraphMethodException",
    )


# --- Objects and paths ---------------------------------------------------------------------------


def unknown_object(method: str, object_id: str) -> GraphAnswerError:
    """Pixel unknown, or the token has no access to it (code 100, subcode 33)."""
    return GraphAnswerError(
        400,
        100,
        f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation.",
        type="GraphMethodException",
        subcode=33,
    )


def missing_parameter(name: str) -> GraphAnswerError:
    """A required query parameter left out (code 100; the wording is *unconfirmed*)."""
    return GraphAnswerError(400, 100, f"(#100) The parameter {name} is required")


def unknown_path(path: str) -> GraphAnswerError:
    """A path the Graph API does not have (code 2500)."""
    return GraphAnswerError(400, 2500, f"Unknown path components: {path}")


def deprecated_version(version: str, oldest: str) -> GraphAnswerError:
    """A Graph API version older than the oldest one still served (code 2635)."""
    return GraphAnswerError(
        400,
        2635,
        f"(#2635) You are calling a deprecated version of the Graph API ({version}). "
        f"Please update to {oldest} or newer.",
    )


def nonexisting_field(field_name: str) -> GraphAnswerError:
    """``fields=`` names a field the pixel node does not have (code 100)."""
    return GraphAnswerError(
        400,
        100,
        f"(#100) Tried accessing nonexisting field ({field_name}) on node type (AdsPixel)",
    )


def invalid_body(reason: str) -> GraphAnswerError:
    """The request body or a top-level parameter is malformed (code 100, no subcode)."""
    return GraphAnswerError(400, 100, f"(#100) {reason}")


# --- Events --------------------------------------------------------------------------------------
#
# Meta's answer to a request with a bad event is ``"message": "Invalid parameter"`` with a
# subcode and a localized title and text for people; it never says which event of ``data`` was
# at fault (real bodies: rudderlabs/rudder-transformer test/integrations/destinations/
# facebook_pixel/network.ts for 2804003, github.com/facebook/facebook-java-business-sdk/issues/421
# for 2804016, Setono/meta-conversions-api-php-sdk src/Client/ErrorResponse.php for 2804050).
# The titles below follow those bodies; the texts are the sandbox's own words. docs/META.md,
# "Sandbox answers", lists every answer with its source.

INVALID_PARAMETER = "Invalid parameter"


def invalid_event(reason: str, *, subcode: int | None = None) -> GraphAnswerError:
    """An event of ``data`` is wrong, which fails the whole request (code 100).

    ``reason`` goes to ``error_user_msg`` only and names a field, never an event.
    """
    return GraphAnswerError(
        400,
        100,
        INVALID_PARAMETER,
        subcode=subcode,
        user_title="Invalid parameter",
        user_msg=f"{reason}. No event of the request was processed.",
    )


def event_time_too_old() -> GraphAnswerError:
    """``event_time`` more than 7 days in the past (code 100, subcode 2804003)."""
    return GraphAnswerError(
        400,
        100,
        INVALID_PARAMETER,
        subcode=2804003,
        user_title="Event Timestamp Too Old",
        user_msg="An event's timestamp is more than 7 days in the past. Send events from your "
        "server within 7 days of when they happened.",
    )


def event_time_in_future() -> GraphAnswerError:
    """``event_time`` ahead of the sandbox's clock.

    Meta documents no tolerance and no subcode for this (FACTS §8, *unconfirmed*); the
    sandbox answers like a timestamp refusal (code 100, subcode 2804003).
    """
    return GraphAnswerError(
        400,
        100,
        INVALID_PARAMETER,
        subcode=2804003,
        user_title="Event Timestamp In The Future",
        user_msg="An event's timestamp lies in the future. Send the moment the event really "
        "happened, as Unix seconds.",
    )


def unhashed_user_data(key: str) -> GraphAnswerError:
    """A user_data key that must be SHA-256 hashed is not (code 100, subcode 2804016).

    Like Meta's answer, the text names the key but not the event.
    """
    return GraphAnswerError(
        400,
        100,
        INVALID_PARAMETER,
        subcode=2804016,
        user_title="User Parameter Not Hashed",
        user_msg=f"The {key} parameter is not hashed. Normalize it and hash it with SHA-256; "
        "only the user agent, click ID and browser ID are sent unhashed.",
    )


def insufficient_customer_information() -> GraphAnswerError:
    """user_data too weak to match anyone (code 100, subcode 2804050)."""
    return GraphAnswerError(
        400,
        100,
        INVALID_PARAMETER,
        subcode=2804050,
        user_title="Insufficient customer information parameters",
        user_msg="An event has no customer information parameters, or only a combination too "
        "broad to match anyone. Add a strong key such as em, ph, external_id, fbp or "
        "client_ip_address.",
    )


# --- Faults --------------------------------------------------------------------------------------


def server_failure() -> GraphAnswerError:
    """An injected 500 (code 2, transient)."""
    return GraphAnswerError(
        500,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        is_transient=True,
    )


RATE_LIMIT_ERRORS: dict[int, tuple[int | None, str]] = {
    4: (1504022, "(#4) Application request limit reached"),
    17: (2446079, "(#17) User request limit reached"),
    613: (1487742, "(#613) Calls to this api have exceeded the rate limit."),
    80004: (
        None,
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
    ),
}


def rate_limited(code: int, headers: dict[str, str]) -> GraphAnswerError:
    """An injected rate-limit answer (codes 4, 17, 613 or 80004) with usage headers."""
    subcode, message = RATE_LIMIT_ERRORS[code]
    return GraphAnswerError(400, code, message, subcode=subcode, is_transient=True, headers=headers)
