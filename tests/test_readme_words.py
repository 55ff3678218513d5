"""The README's marketer and agency sections name what the pages show, word for word (issue 16).

Every phrase the README sets in bold in "For marketers" and "For agencies" is a button, a label,
a badge or a message the pages show. This test finds each one in what the pages are made of:
the templates, the page scripts, and the texts of the app's code (read from its syntax tree, so
text Python joins from several lines is whole). A "…" in the README stands for what a page
fills in (a name, a time). The few bold phrases that are the README's own paragraph lead-ins
are listed below; anything else that drifts from the pages fails here.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "capi_destinations"

# Bold lead-ins of the README's own paragraphs: not words a page shows.
README_ONLY = {
    "Addresses.",
    "By default",
    "Delivery.",
    "Exports for reports",
    "Inviting by email",
    "Roles in the admin",
    "Roles on the pages",
}


def readme_sections() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## For marketers") : text.index("## For developers")]


def code_texts(path: Path) -> list[str]:
    """Every string constant of a module, adjacent literals already joined by the parser."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
    return texts


def what_pages_are_made_of() -> str:
    # Templates with their HTML tags taken out: "Test code for <strong>Send test event</strong>"
    # reads as the page shows it.
    parts = [re.sub(r"<[^>]+>", "", path.read_text()) for path in APP.glob("templates/**/*.html")]
    parts += [path.read_text() for path in APP.glob("static/capi_destinations/*.js")]
    for path in APP.glob("**/*.py"):
        if "migrations" not in path.parts and "sandbox" not in path.parts:
            parts += code_texts(path)
    return squeeze(html.unescape("\n".join(parts)))


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def found(phrase: str, corpus: str) -> bool:
    # The quotes around a quoted message are the README's, not the page's.
    phrase = squeeze(phrase).strip().strip("\"'“”")
    return all(part.strip() in corpus for part in phrase.split("…") if part.strip())


def test_every_bold_phrase_of_the_marketer_and_agency_sections_is_on_the_pages() -> None:
    corpus = what_pages_are_made_of()
    bold = set(re.findall(r"\*\*(.+?)\*\*", readme_sections(), re.S))
    missing = sorted(phrase for phrase in bold - README_ONLY if not found(phrase, corpus))
    assert missing == []


def test_the_check_itself_can_fail() -> None:
    corpus = what_pages_are_made_of()
    assert found("Replace token", corpus)
    assert not found("Replace the tokken", corpus)
