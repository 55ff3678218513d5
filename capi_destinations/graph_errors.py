"""What each Graph API answer means and what to do about it: the one classification table.

Every failed Graph call ends in one of six categories, and the category decides what the caller
does: ``auth`` and ``permission`` stop sending for the destination until someone fixes its
configuration, ``invalid`` means the request's data is wrong (bisect the batch, fail the bad
events), ``rate_limit`` and ``transient`` retry later, ``unknown`` retries with care and shows
the error. Codes, subcodes and reactions come from FACTS.md §11 and the troubleshooting table
users have seen (USERS.md); each known code has a plain-language explanation and a fix. A code
or subcode without public documentation has no entry of its own (no invented meaning).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import TextChoices

from capi_destinations import problems


class Category(TextChoices):
    """What a failed Graph call means for the caller; stored on ``DeliveryAttempt.category``."""

    AUTH = "auth", "Token refused"
    PERMISSION = "permission", "Permission missing"
    RATE_LIMIT = "rate_limit", "Rate limited"
    INVALID = "invalid", "Invalid request"
    TRANSIENT = "transient", "Temporary failure"
    UNKNOWN = "unknown", "Unknown error"


# The values as plain strings, as compared and stored everywhere.
AUTH: str = Category.AUTH.value
PERMISSION: str = Category.PERMISSION.value
RATE_LIMIT: str = Category.RATE_LIMIT.value
INVALID: str = Category.INVALID.value
TRANSIENT: str = Category.TRANSIENT.value
UNKNOWN: str = Category.UNKNOWN.value

CATEGORIES: tuple[str, ...] = tuple(Category.values)
# Categories a retry of the same request cannot fix.
PERMANENT_CATEGORIES = frozenset({AUTH, PERMISSION, INVALID})


@dataclass(frozen=True)
class ErrorInfo:
    """A category plus the plain-language explanation and fix shown to people."""

    category: str
    explanation: str
    fix: str
    #: The key of the destination problem it is (``problems.PROBLEMS``), when it is one.
    problem: str = ""


def _of(category: str, problem: problems.Problem) -> ErrorInfo:
    """The answer that *is* ``problem``: its reason and fix, worded once in ``problems``."""
    return ErrorInfo(category, problem.reason, problem.fix, problem.key)


_FIX_REGENERATE = problems.TOKEN_REVOKED.fix
_CHECK_PIXEL = problems.WRONG_PIXEL.fix
_REVOKED = problems.TOKEN_REVOKED.key
_WRONG_PIXEL = problems.WRONG_PIXEL.key
_RATE_LIMITED = problems.RATE_LIMITED.key
_BISECT = "The batch is split automatically to find the event at fault; the others are resent."
_WAIT = "Nothing to do: sending resumes by itself after a pause."

# (code, subcode) → meaning. A subcode of None is the code's general entry.
KNOWN_ERRORS: dict[tuple[int, int | None], ErrorInfo] = {
    # --- auth: the token itself is refused ------------------------------------------------
    (190, None): _of(AUTH, problems.TOKEN_REVOKED),
    (190, 458): ErrorInfo(
        AUTH,
        "The app that issued the token is no longer installed for its user.",
        _FIX_REGENERATE,
        _REVOKED,
    ),
    (190, 459): ErrorInfo(
        AUTH,
        "The token's user is checkpointed: Meta wants them to log in and confirm something.",
        "Log in to Facebook with the token's user, clear the checkpoint, then generate a new "
        "token.",
        _REVOKED,
    ),
    (190, 460): ErrorInfo(
        AUTH,
        "The token stopped working because its user changed their password.",
        _FIX_REGENERATE,
        _REVOKED,
    ),
    (190, 463): _of(AUTH, problems.TOKEN_EXPIRED),
    (190, 464): ErrorInfo(
        AUTH,
        "The token's user is not confirmed on Facebook.",
        "Confirm the user's account on Facebook, or use a system user's token.",
        _REVOKED,
    ),
    (190, 467): _of(AUTH, problems.TOKEN_REVOKED),
    (190, 492): ErrorInfo(
        AUTH,
        "The token's session is invalid (often: the user lost their role on the business).",
        "Check the user's role in Business Settings, then generate a new token.",
        _REVOKED,
    ),
    (102, None): ErrorInfo(
        AUTH, "Meta says the API session is invalid.", _FIX_REGENERATE, _REVOKED
    ),
    (104, None): ErrorInfo(
        AUTH,
        "The request reached Meta without an access token.",
        "Paste the token into this destination again. If it keeps happening, report it as a "
        "bug: the token should always be sent.",
    ),
    # --- permission: the token works but may not use this pixel ---------------------------
    (100, 33): _of(PERMISSION, problems.WRONG_PIXEL),
    (10, None): ErrorInfo(
        PERMISSION, "Meta denied permission for this request.", _CHECK_PIXEL, _WRONG_PIXEL
    ),
    (3, None): ErrorInfo(
        PERMISSION,
        "The token's app lacks the capability this call needs.",
        "Generate the token from the pixel's Conversions API settings or for a system user "
        "with the ads_management permission.",
    ),
    (200, None): ErrorInfo(
        PERMISSION,
        "Permission denied for this pixel.",
        "Assign the pixel to the system user as an asset, and use a token from the Business "
        "Manager that owns the pixel.",
        _WRONG_PIXEL,
    ),
    (2635, None): _of(PERMISSION, problems.API_VERSION_ENDED),
    # --- invalid: the data in the request is wrong ----------------------------------------
    # Only subcodes with a public source have an entry (docs/META.md, "Dispatch reactions").
    # Codes and subcodes nobody has documented (1815018, 2061015, 2804019, 2804036, 2804087,
    # 2804001, 2804007, 2804017, 2804048) get no invented meaning: they fall back to their
    # code's documented class (code 100: invalid) or, for an unknown code, to the HTTP status
    # and is_transient, and Meta's own message is shown. None of them blocks a destination.
    (100, None): ErrorInfo(
        INVALID,
        "Meta rejected a parameter of the request; one bad event fails the whole batch.",
        "Check field names, event_name casing, event_time in Unix seconds, currency and "
        "custom_data. " + _BISECT,
    ),
    (100, 2804003): ErrorInfo(
        INVALID,
        "An event's time is too old (7 days; 62 for store events) or lies in the future.",
        "Send the real moment of the event, and keep queue delays inside Meta's window (7 days; "
        "62 for store events); stale events are dropped and the rest resent.",
    ),
    (100, 2804016): ErrorInfo(
        INVALID,
        "A customer information parameter that must be hashed was sent unhashed.",
        "Normalize and SHA-256 hash em, ph, fn, ln, ge, db, ct, st, zp and country; never "
        "hash fbp, fbc, IP or user agent.",
    ),
    (100, 2804050): ErrorInfo(
        INVALID,
        "An event carries too little customer information for Meta to match it.",
        "Send at least one strong user_data key (email, phone, external_id, fbp, fbc or IP "
        "with user agent). " + _BISECT,
    ),
    (100, 2804030): ErrorInfo(
        INVALID,
        "Meta requires a Limited Data Use choice for this event.",
        "Send data_processing_options (with country and state when it is LDU).",
    ),
    # --- transient: Meta's side, retry ----------------------------------------------------
    (1, None): ErrorInfo(
        TRANSIENT,
        "Meta reported an unknown error, possibly a short outage.",
        "Nothing to do: the request is retried. If it persists, check the request.",
    ),
    (1, 99): ErrorInfo(
        TRANSIENT,
        "Meta reported an unknown error, possibly a short outage.",
        "Nothing to do: the request is retried. If it persists, check the request.",
    ),
    (2, None): ErrorInfo(
        TRANSIENT, "Meta's service is temporarily unavailable.", "Nothing to do: it is retried."
    ),
    # --- rate_limit: back off -------------------------------------------------------------
    (4, None): ErrorInfo(RATE_LIMIT, "The app's Graph API request limit was reached.", _WAIT),
    (4, 1504022): ErrorInfo(RATE_LIMIT, "The app's Graph API request limit was reached.", _WAIT),
    (4, 1504039): ErrorInfo(RATE_LIMIT, "The app's Graph API request limit was reached.", _WAIT),
    (17, None): ErrorInfo(RATE_LIMIT, "The token's user hit their request limit.", _WAIT),
    (17, 2446079): ErrorInfo(RATE_LIMIT, "The token's user hit their request limit.", _WAIT),
    (613, None): ErrorInfo(
        RATE_LIMIT,
        "Calls for this account exceeded Meta's rate limit.",
        "Nothing to do: sending pauses and resumes. If it recurs, make sure only one system "
        "sends this pixel's events and batch lower-priority events.",
    ),
    (613, 1487742): ErrorInfo(
        RATE_LIMIT,
        "Calls for this ad account exceeded Meta's rate limit.",
        "Nothing to do: sending pauses and resumes. If it recurs, make sure only one system "
        "sends this pixel's events.",
    ),
    (80004, None): ErrorInfo(
        RATE_LIMIT,
        "Too many calls to the ad account behind this pixel.",
        "Nothing to do: sending resumes when Meta says access is back.",
    ),
    (32, None): ErrorInfo(RATE_LIMIT, "The Page request limit was reached.", _WAIT),
    (341, None): ErrorInfo(RATE_LIMIT, "The application's limit was reached.", _WAIT),
    (368, None): ErrorInfo(
        RATE_LIMIT,
        "Meta temporarily blocked these calls for a policy violation.",
        "Sending is retried later; review the app and the business in Meta's Business "
        "Support Home.",
    ),
}


def _in_problem_words(info: ErrorInfo) -> ErrorInfo:
    """``info`` with its problem's reason first, when it is a finer case of one ("Meta refused
    the token: …. The token stopped working because its user changed their password.")."""
    found = problems.problem(info.problem)
    if found is None or info.explanation.startswith(found.reason):
        return info
    return ErrorInfo(info.category, f"{found.reason} {info.explanation}", info.fix, info.problem)


KNOWN_ERRORS = {key: _in_problem_words(info) for key, info in KNOWN_ERRORS.items()}

# Codes Meta gives with subcodes we have no entry for fall back to the code's general entry;
# these ranges stand for whole families of codes.
_PERMISSION_CODE_RANGE = range(200, 300)

# Messages that pin a code-100 answer to the app secret rather than to the events.
_APPSECRET_MARKER = "appsecret_proof"

# Meta's 190 for a token it cannot read at all ("Invalid OAuth access token - Cannot parse access
# token", FACTS §11/§14): a token cut short or altered, not one that was revoked or expired.
_UNPARSEABLE_TOKEN_MARKER = "Cannot parse access token"  # noqa: S105 (Meta's message, not a secret)

UNPARSEABLE_TOKEN = _of(AUTH, problems.TOKEN_INCOMPLETE)

APPSECRET_PROOF = _of(AUTH, problems.APP_SECRET)
TIMEOUT = ErrorInfo(
    TRANSIENT,
    "Meta did not answer in time. The events may or may not have arrived; resending them "
    "with the same event_id is safe because Meta deduplicates.",
    "Nothing to do: the request is retried.",
)
CONNECTION_FAILED = ErrorInfo(
    TRANSIENT,
    "Could not reach the Graph API (connection refused, reset or DNS failure).",
    "Nothing to do if it is brief: the request is retried. If it lasts, check this server's "
    "outbound network and the GRAPH_API_BASE_URL setting.",
)
CONNECTION_LOST = ErrorInfo(
    TRANSIENT,
    "The connection to the Graph API broke before an answer arrived. The events may or may "
    "not have arrived; resending them with the same event_id is safe because Meta "
    "deduplicates.",
    "Nothing to do: the request is retried.",
)
UNPARSEABLE = ErrorInfo(
    TRANSIENT,
    "Meta's answer could not be read (not JSON, or cut off).",
    "Nothing to do: the request is retried.",
)
SERVER_ERROR = ErrorInfo(
    TRANSIENT, "Meta's servers answered with an error.", "Nothing to do: the request is retried."
)
TOO_MANY_REQUESTS = ErrorInfo(RATE_LIMIT, "Meta asked to slow down (HTTP 429).", _WAIT)
NOT_GRAPH_API = ErrorInfo(
    UNKNOWN,
    "The Graph API address answered with a page that is not the Graph API.",
    "Check the GRAPH_API_BASE_URL setting.",
)
UNEXPECTED_ANSWER = ErrorInfo(
    UNKNOWN,
    "Meta answered in a way this app does not recognise.",
    "Look at the error message and code; if it persists, contact support with the fbtrace_id.",
)


def classify(
    http_status: int | None,
    code: int | None,
    subcode: int | None,
    is_transient: bool | None,
    *,
    message: str = "",
) -> ErrorInfo:
    """Category, explanation and fix for a Graph API error answer.

    Look-up order: the exact (code, subcode); the code's general entry; the code's family
    (200 to 299 are permissions); then the HTTP status (5xx transient, 429 rate limit, 401 auth,
    403 permission) and Meta's ``is_transient`` hint; otherwise ``unknown``. ``message`` only
    tells an appsecret_proof refusal (code 100) apart from bad event data, and a token Meta
    cannot parse (a cut paste) apart from a revoked one (both code 190).
    """
    if code is not None:
        if code == 100 and subcode is None and _APPSECRET_MARKER in message:
            return APPSECRET_PROOF
        if is_unparseable_token(code, subcode, message):
            return UNPARSEABLE_TOKEN
        known = KNOWN_ERRORS.get((code, subcode)) or KNOWN_ERRORS.get((code, None))
        if known is not None:
            return known
        if subcode is not None and (subcode, None) in KNOWN_ERRORS:
            # Users were told some numbers as "codes" that Meta may send as subcodes.
            return KNOWN_ERRORS[(subcode, None)]
        if code in _PERMISSION_CODE_RANGE:
            return _in_problem_words(
                ErrorInfo(
                    PERMISSION,
                    f"Meta denied a permission this call needs (#{code}).",
                    _CHECK_PIXEL,
                    _WRONG_PIXEL,
                )
            )
    if http_status is not None:
        if http_status >= 500:
            return SERVER_ERROR
        if http_status == 429:
            return TOO_MANY_REQUESTS
        if http_status == 401:
            return KNOWN_ERRORS[(190, None)]
        if http_status == 403:
            return _in_problem_words(
                ErrorInfo(
                    PERMISSION, "Meta denied access to this pixel.", _CHECK_PIXEL, _WRONG_PIXEL
                )
            )
    if is_transient:
        return ErrorInfo(
            TRANSIENT,
            "Meta marked this error as temporary.",
            "Nothing to do: the request is retried.",
        )
    return UNEXPECTED_ANSWER


def is_unparseable_token(code: int | None, subcode: int | None, message: str) -> bool:
    """Whether Meta's answer says it cannot read the token at all (a cut or altered paste)."""
    return code == 190 and subcode is None and _UNPARSEABLE_TOKEN_MARKER in (message or "")
