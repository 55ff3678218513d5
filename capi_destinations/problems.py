"""The problems a destination can have, each worded once: the reason, the fix, the control.

The health card, the token check of the forms, the delivery attempts and the README's "When a
destination is Unhealthy" table all take their words from :data:`PROBLEMS`, so one problem
never reads three ways. A ``reason`` is how the card's message begins (details may follow it,
such as a duration or Meta's own text); ``fix`` is said once, in plain words; ``action`` names
the control that applies the fix (the card links to it), or is empty when the fix is not a
button of this app (a worker to start, an outage to wait out).

``tests/test_problems.py`` asserts that the README's table is :func:`readme_table` word for
word: change a wording here, then paste the new table there (``python -m
capi_destinations.problems`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

# The controls a fix can point at (the pages turn each into a link).
REPLACE_TOKEN = "replace_token"  # noqa: S105 (a control's name, not a secret)
ENABLE = "enable"
EDIT = "edit"
FAILED_EVENTS = "failed_events"

#: The words of each control's link, as its button reads.
ACTION_LABELS = {
    REPLACE_TOKEN: "Replace token",
    ENABLE: "Enable",
    EDIT: "Edit",
    FAILED_EVENTS: "Open the failed events",
}


@dataclass(frozen=True)
class Problem:
    """One problem: its key, how the card words it, its fix, and the control that applies it."""

    key: str
    reason: str
    fix: str
    action: str = ""
    #: A note never turns a card red (test mode, low match quality, a rate-limit pause).
    note: bool = False

    @property
    def action_label(self) -> str:
        """The link's words ("Replace token"), or "" when no control applies the fix."""
        return ACTION_LABELS.get(self.action, "")


_GENERATE_ANOTHER = (
    "Generate a new token in Events Manager → your pixel → Settings → Conversions API → "
    "Generate access token (for production, a system user's token from Business Settings → "
    "System Users, which survives people leaving), and paste it with Replace token."
)

SENDING_OFF = Problem(
    "sending_off",
    "Sending is turned off: events are recorded here but nothing is sent to Meta.",
    "Tick “Send events via Conversions API” (Enable). Events recorded in the last 7 days "
    "are then sent.",
    ENABLE,
)
TOKEN_UNREADABLE = Problem(
    "token_unreadable",
    "The stored token cannot be decrypted with this server's encryption keys.",
    "Ask the site's administrator to put the previous key back in FERNET_KEYS, or paste the "
    "token again with Replace token.",
    REPLACE_TOKEN,
)
TOKEN_NOT_WHOLE = Problem(
    "token_not_whole",
    "The token was not pasted whole.",
    "Copy the token again in one piece (it starts with EAA and is about 190 letters and "
    "digits, without spaces, line breaks or quotes) from Events Manager → your pixel → "
    "Settings → Conversions API, and paste it with Replace token.",
    REPLACE_TOKEN,
)
TOKEN_INCOMPLETE = Problem(
    "token_incomplete",
    "Meta cannot read the access token (“Cannot parse access token”): the pasted token looks "
    "incomplete.",
    "Copy the whole token again, all of it, and paste it in one piece with Replace token; no "
    "new token is needed unless you no longer have it.",
    REPLACE_TOKEN,
)
TOKEN_REVOKED = Problem(
    "token_revoked",
    "Meta refused the token: it is invalid or was revoked (for example, its user left the "
    "business, changed their password or removed the app).",
    _GENERATE_ANOTHER,
    REPLACE_TOKEN,
)
TOKEN_EXPIRED = Problem(
    "token_expired",
    "Meta says the token has expired.",
    _GENERATE_ANOTHER,
    REPLACE_TOKEN,
)
WRONG_PIXEL = Problem(
    "wrong_pixel",
    "Meta cannot find this pixel for this token: the Pixel ID is wrong, or the token has no "
    "access to it.",
    "Check that the Pixel ID is the pixel the token was generated for (Edit), and that the "
    "pixel is assigned to the token's system user in Business Settings.",
    EDIT,
)
APP_SECRET = Problem(
    "app_secret",
    "Meta refused the request's appsecret_proof: the app secret stored for this destination "
    "does not match the token's app, or the app requires one and none is stored.",
    "Copy the app secret from the token's Meta app (App settings → Basic) into this "
    "destination (Edit), or clear it if the app does not require it.",
    EDIT,
)
EVERY_REQUEST_REFUSED = Problem(
    "every_request_refused",
    "Meta refuses every request for this destination, whatever the events.",
    "This is not one event's fault, so no event was failed: they wait, without using up their "
    "retries. Check what every request of this destination carries (Edit): its test event code "
    "(paste the current one from Events Manager → Test Events, or clear it), its Graph API "
    "version, and its consent policy if Meta asks for Limited Data Use; Meta's message says "
    "which. One of the destination's own waiting events is sent alone from time to time (never "
    "a made-up one); when Meta accepts it, sending resumes.",
    EDIT,
)
API_VERSION_ENDED = Problem(
    "api_version_ended",
    "The Graph API version this destination uses is no longer served by Meta.",
    "Use a current Graph API version: edit the destination's Graph API version (Edit, with the "
    "token pasted again), or, for destinations without their own, ask the site's administrator "
    "to update the GRAPH_API_VERSION setting.",
    EDIT,
)
EVENTS_DATA_REFUSED = Problem(
    "events_data_refused",
    "Meta refused the data of many recent events.",
    "Open the failed events: each names the field Meta refused and how to fix what your site "
    "sends.",
    FAILED_EVENTS,
)
QUEUE_STALLED = Problem(
    "queue_stalled",
    "Events that are due are not being sent: no worker seems to be sending them.",
    "Ask whoever runs the site to start the task workers (python manage.py qcluster) or the "
    "capi_dispatch cron job, and to look at their logs for errors.",
)
TRAFFIC_DROPPED = Problem(
    "traffic_dropped",
    "Far fewer events than usual are being recorded for this time of the week.",
    "Check that your site still calls track() (a release may have removed it): open a page that "
    "should send an event and look for it in this destination's event log.",
)
META_UNREACHABLE = Problem(
    "meta_unreachable",
    "Could not reach Meta, or Meta had errors.",
    "Nothing to do if it is brief: events are kept and retried, nothing is lost. If it lasts, "
    "check https://metastatus.com and that this server can reach graph.facebook.com.",
)
RATE_LIMITED = Problem(
    "rate_limited",
    "Meta asked to slow down (rate limit).",
    "Nothing to do: sending resumes by itself. If it keeps happening, make sure only one "
    "system sends this pixel's events.",
)
SEND_ONLY_TOKEN = Problem(
    "send_only_token",
    "Meta does not let this token read the pixel, so the pixel's name cannot be shown.",
    "Nothing to do for a token made in the dataset's Conversions API settings (Meta limits it "
    "to sending). Otherwise check that the Pixel ID is the pixel the token was generated for "
    "(Edit).",
    EDIT,
    note=True,
)
API_VERSION_ENDING = Problem(
    "api_version_ending",
    "The Graph API version this destination uses stops working soon.",
    "Before that date, use a current Graph API version: edit the destination's Graph API "
    "version (Edit, with the token pasted again), or, for destinations without their own, ask "
    "the site's administrator to update the GRAPH_API_VERSION setting.",
    EDIT,
    note=True,
)
TEST_MODE = Problem(
    "test_mode",
    "Test mode is on: events also show in Events Manager → Test Events, and Meta still records "
    "them in the dataset as live data.",
    "When a whole test journey looks clean for ten minutes, clear the test event code (Edit).",
    EDIT,
    note=True,
)
LOW_MATCH_QUALITY = Problem(
    "low_match_quality",
    "Estimated match quality of recent events is low.",
    "Send the hashed email and phone with every event where you have them, plus an external "
    "ID, the fbp/fbc cookies and the client's IP address and user agent (the browser helper "
    "adds these).",
    note=True,
)

#: Every problem, in the order the README lists them.
PROBLEMS: dict[str, Problem] = {
    problem.key: problem
    for problem in (
        SENDING_OFF,
        TOKEN_NOT_WHOLE,
        TOKEN_INCOMPLETE,
        TOKEN_REVOKED,
        TOKEN_EXPIRED,
        TOKEN_UNREADABLE,
        WRONG_PIXEL,
        APP_SECRET,
        EVERY_REQUEST_REFUSED,
        API_VERSION_ENDED,
        EVENTS_DATA_REFUSED,
        QUEUE_STALLED,
        TRAFFIC_DROPPED,
        META_UNREACHABLE,
        RATE_LIMITED,
        SEND_ONLY_TOKEN,
        API_VERSION_ENDING,
        TEST_MODE,
        LOW_MATCH_QUALITY,
    )
}


#: Stands in a refused call's fix for the origin refused last (the page names it).
THE_REFUSED_ORIGIN = "the site's origin"

#: Calls the ingest endpoint refused, counted per destination (``RefusedCalls``): what each means
#: and what fixes it. Not health problems: the destination may be perfectly healthy.
REFUSED_CALLS: dict[str, Problem] = {
    item.key: item
    for item in (
        Problem(
            "origin_not_allowed",
            "Browser calls came from an origin that is not among the allowed origins.",
            f"Add {THE_REFUSED_ORIGIN} to the allowed origins (Edit), if it is your site: a "
            "browser posts only from there. An origin you do not know is someone else's page: "
            "leave it out.",
            EDIT,
        ),
        Problem(
            "missing_credentials",
            "Calls came with neither the server key nor a browser origin.",
            "Servers add the header Authorization: Bearer <server key>; browsers post from an "
            "allowed origin through the snippet.",
        ),
        Problem(
            "wrong_secret",
            "Calls brought a server key that is not this destination's.",
            "Use the current server key; if it was lost, Regenerate ingest keys and update the "
            "server that sends.",
        ),
        Problem(
            "rate_limited",
            "Calls went over a rate limit (counted once per limit window).",
            'Send events in batches ({"data": [...]}, up to 1000 a call), or ask the site\'s '
            "administrator to raise INGEST_RATE_LIMIT, INGEST_BROWSER_RATE_LIMIT or "
            "INGEST_CLIENT_RATE_LIMIT.",
        ),
        Problem(
            "bad_body",
            'Calls brought a body that is not an event, a list of events or {"data": [...]} in '
            "JSON, or too large a one.",
            "Check what the site sends: the answer to each such call names the problem.",
        ),
    )
}


def problem(key: str | None) -> Problem | None:
    """The problem stored under ``key``, a health problem or a refused call's (None for an
    unknown or empty key: an older record)."""
    return PROBLEMS.get(key or "") or REFUSED_CALLS.get(key or "")


def readme_table() -> str:
    """The README's table of reasons and fixes, as Markdown (one row per problem)."""
    rows = ["| the card says | what to do | the link on the card |", "|---|---|---|"]
    for item in PROBLEMS.values():
        kind = " *(a note: never turns the card red)*" if item.note else ""
        link = f"**{item.action_label}**" if item.action_label else "—"
        rows.append(f"| **{item.reason}**{kind} | {item.fix} | {link} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - prints the README's table
    print(readme_table())
