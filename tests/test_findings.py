"""Findings: the one severity order, and the Diagnostic record as stored."""

from __future__ import annotations

from capi_destinations import diagnostics, findings
from capi_destinations.findings import ERROR, INFO, WARNING, Diagnostic, Severity


def finding(code: str, severity: str) -> Diagnostic:
    return Diagnostic(code=code, field="event_id", severity=severity, message="m", fix="f")


def test_there_is_one_severity_order_and_unknown_values_come_last() -> None:
    assert [severity.value for severity in Severity] == [ERROR, WARNING, INFO]
    assert [findings.severity_rank(s) for s in (ERROR, WARNING, INFO, "old")] == [0, 1, 2, 3]


def test_findings_sort_most_serious_first_and_keep_their_order_otherwise() -> None:
    found = [
        finding("a", INFO),
        finding("b", "old"),
        finding("c", ERROR),
        finding("d", WARNING),
        finding("e", ERROR),
    ]

    assert [item.code for item in findings.by_severity(found)] == ["c", "e", "d", "a", "b"]


def test_severities_are_stored_as_plain_text() -> None:
    stored = finding("a", WARNING).to_dict()

    assert type(stored["severity"]) is str
    assert Diagnostic.from_dict(stored) == finding("a", WARNING)
    assert findings.has_errors([finding("a", WARNING), finding("b", ERROR)])
    assert not finding("a", INFO).blocks_sending


def test_diagnostics_still_offers_the_findings_vocabulary() -> None:
    assert diagnostics.Diagnostic is Diagnostic
    assert (diagnostics.ERROR, diagnostics.WARNING, diagnostics.INFO) == (ERROR, WARNING, INFO)
