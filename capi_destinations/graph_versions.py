"""Graph API versions: when Meta introduced each one and until when it can be called.

Meta supports every Graph API version for at least two years, then calls to it stop working
(https://developers.facebook.com/docs/graph-api/changelog, "Available Graph API Versions";
https://developers.facebook.com/docs/apps/versions, "Version Schedules"). The table below is
copied by hand from that changelog; a version Meta has not given an end date yet has ``None``.
:func:`version_status` says whether a version is fine, ending soon (within
:data:`WARN_BEFORE_END`) or past its end, for the health card, ``capi_healthcheck`` and the
system check of the ``GRAPH_API_VERSION`` setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

#: Where the dates come from (shown in messages, so a reader can check them).
CHANGELOG_URL = "https://developers.facebook.com/docs/graph-api/changelog"

#: How long before a version's end the health card starts warning.
WARN_BEFORE_END = timedelta(days=90)

# version: (introduced, available until or None while Meta says "TBD").
# Source: Meta's Graph API changelog, "Available Graph API Versions" (read 2026-12).
VERSIONS: dict[str, tuple[date, date | None]] = {
    "v26.0": (date(2026, 7, 29), None),
    "v25.0": (date(2026, 2, 18), date(2028, 7, 29)),
    "v24.0": (date(2025, 10, 8), date(2028, 2, 18)),
    "v23.0": (date(2025, 5, 29), date(2027, 10, 8)),
    "v22.0": (date(2025, 1, 21), date(2027, 5, 20)),
    "v21.0": (date(2024, 10, 2), date(2027, 1, 21)),
    "v20.0": (date(2024, 5, 21), date(2026, 9, 24)),
    "v19.0": (date(2024, 1, 23), date(2026, 5, 21)),
    "v18.0": (date(2023, 9, 12), date(2026, 1, 26)),
    "v17.0": (date(2023, 5, 23), date(2025, 9, 12)),
    "v16.0": (date(2023, 2, 2), date(2025, 5, 14)),
    "v15.0": (date(2022, 9, 15), date(2024, 11, 20)),
    "v14.0": (date(2022, 5, 25), date(2024, 9, 17)),
    "v13.0": (date(2022, 2, 8), date(2024, 5, 28)),
    "v12.0": (date(2021, 9, 14), date(2024, 2, 8)),
    "v11.0": (date(2021, 6, 8), date(2023, 9, 14)),
    "v10.0": (date(2021, 2, 23), date(2023, 6, 8)),
}

# The version strings Meta uses: "v" + major + "." + minor.
_VERSION = re.compile(r"v(\d+)\.(\d+)")

OK = "ok"
ENDING = "ending"
ENDED = "ended"
UNLISTED = "unlisted"


@dataclass(frozen=True)
class VersionStatus:
    """Where a Graph API version stands on a given day."""

    version: str
    state: str  # OK, ENDING, ENDED or UNLISTED
    available_until: date | None
    message: str
    fix: str = ""

    @property
    def is_warning(self) -> bool:
        """Ending within :data:`WARN_BEFORE_END`."""
        return self.state == ENDING

    @property
    def is_error(self) -> bool:
        """Past its end: Meta no longer answers calls to it as this version."""
        return self.state == ENDED


def _key(version: str) -> tuple[int, int] | None:
    match = _VERSION.fullmatch(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def newest_version() -> str:
    """The newest version in the table."""
    return max(VERSIONS, key=lambda version: _key(version) or (0, 0))


def version_status(version: str, today: date) -> VersionStatus:
    """Whether ``version`` can still be used on ``today``, and what to do if not.

    A version older than every version in the table is past its end (Meta lists older ones as
    long gone); a newer one, or one the table does not know, is ``unlisted`` and never warned
    about.
    """
    newest = newest_version()
    upgrade = (
        f"Use Graph API {newest}: edit the destination's Graph API version (with the token "
        "pasted again), or, for destinations without their own, ask the site's administrator "
        f"to update the GRAPH_API_VERSION setting. Meta's dates: {CHANGELOG_URL}"
    )
    known = VERSIONS.get(version)
    if known is None:
        parsed, oldest = _key(version), min(_key(name) or (0, 0) for name in VERSIONS)
        if parsed is not None and parsed < oldest:
            return VersionStatus(
                version,
                ENDED,
                None,
                f"Graph API {version} is years past the end of its availability: Meta no "
                "longer serves it.",
                upgrade,
            )
        return VersionStatus(
            version, UNLISTED, None, f"Graph API {version} is not in our table of Meta's versions."
        )
    available_until = known[1]
    if available_until is None:
        return VersionStatus(
            version, OK, None, f"Graph API {version}: Meta has not set an end date yet."
        )
    if today >= available_until:
        return VersionStatus(
            version,
            ENDED,
            available_until,
            f"Graph API {version} reached the end of its availability on "
            f"{available_until:%d %b %Y}: Meta no longer serves calls to it as {version}.",
            upgrade,
        )
    if available_until - today <= WARN_BEFORE_END:
        days = (available_until - today).days
        return VersionStatus(
            version,
            ENDING,
            available_until,
            f"Graph API {version} stops working on {available_until:%d %b %Y}, in {days} days.",
            upgrade,
        )
    return VersionStatus(
        version,
        OK,
        available_until,
        f"Graph API {version} is available until {available_until:%d %b %Y}.",
    )
