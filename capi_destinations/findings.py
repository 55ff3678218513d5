"""Findings about an event: the ``Diagnostic`` record and its ``Severity``, with their one order.

Every check that reads an event (``normalize``, ``diagnostics``, ``consent``, ``ingest``) reports
what it found as a ``Diagnostic``; this module is their common vocabulary and imports nothing of
the app, so the checks never have to import one another to build one.

``error`` blocks sending (Meta would reject the event, and one bad event fails a whole batch);
``warning`` and ``info`` do not. Findings are stored on the event, so they never contain customer
information: messages name fields, not values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "ERROR",
    "INFO",
    "SEVERITIES",
    "WARNING",
    "Diagnostic",
    "Severity",
    "by_severity",
    "has_errors",
    "severity_rank",
]


class Severity(StrEnum):
    """How much a finding matters, most serious first (the order findings are shown in)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# Plain strings, as stored in the Event row's JSON and compared everywhere.
ERROR: str = Severity.ERROR.value
WARNING: str = Severity.WARNING.value
INFO: str = Severity.INFO.value
#: Every severity, most serious first.
SEVERITIES: tuple[str, ...] = tuple(severity.value for severity in Severity)

_RANK: dict[str, int] = {severity.value: rank for rank, severity in enumerate(Severity)}
# A severity we do not know (an old stored row) sorts after all known ones.
_UNKNOWN_RANK = len(_RANK)


def severity_rank(severity: str) -> int:
    """The position of ``severity`` in the one order: 0 for ``error``, unknown values last."""
    return _RANK.get(severity, _UNKNOWN_RANK)


@dataclass(frozen=True)
class Diagnostic:
    """One finding about one field of an event, with a fix someone can act on.

    ``field`` is a path into the event (``user_data.em``, ``custom_data.contents[2].id``).
    ``meta_code``/``meta_subcode`` are the Graph API error Meta would answer with, when known.
    """

    code: str
    field: str
    severity: str
    message: str
    fix: str
    meta_code: int | None = None
    meta_subcode: int | None = None

    @property
    def blocks_sending(self) -> bool:
        """Whether this finding stops the event from being sent to Meta."""
        return self.severity == ERROR

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as stored on the Event row."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostic:
        """Rebuild a Diagnostic from ``to_dict()`` output."""
        return cls(
            code=str(data["code"]),
            field=str(data.get("field", "")),
            severity=str(data.get("severity", WARNING)),
            message=str(data.get("message", "")),
            fix=str(data.get("fix", "")),
            meta_code=data.get("meta_code"),
            meta_subcode=data.get("meta_subcode"),
        )


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """Whether any of the diagnostics blocks sending."""
    return any(diagnostic.severity == ERROR for diagnostic in diagnostics)


def by_severity(found: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The findings most serious first; equal severities keep their order (a stable sort)."""
    return sorted(found, key=lambda diagnostic: severity_rank(diagnostic.severity))
