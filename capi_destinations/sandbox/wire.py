"""Reading Graph API requests off the wire: bodies, the ``data`` parameter, the token header.

Meta accepts parameters as a JSON body, a form body (the official SDK's way, with ``data`` a
JSON array of JSON-encoded events) or a query string; the sandbox accepts the same.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs


def read_body(environ: dict[str, Any]) -> bytes:
    """The request body of a WSGI request (empty without a Content-Length)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


def first_values(parsed: dict[str, list[str]]) -> dict[str, str]:
    """``parse_qs`` output with one value per name, the first."""
    return {key: values[0] for key, values in parsed.items() if values}


def parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], str | None]:
    """Request parameters from a JSON or form body, and a problem text when it is malformed."""
    if not body:
        return {}, None
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}, "The request body is not valid JSON"
        if not isinstance(parsed, dict):
            return {}, "The request body must be a JSON object"
        return parsed, None
    if kind in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {}, "The request body is not UTF-8"
        return first_values(parse_qs(text, keep_blank_values=True)), None
    return {}, f"Unsupported request body type {kind}"


def decode_data(data: object) -> tuple[Any, str | None]:
    """``data`` as a list of events, accepting the SDK's JSON-encoded forms.

    Returns ``(data, problem)``; ``problem`` is a message when a JSON text inside is broken.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None, "The parameter data must be a JSON array of events"
    if isinstance(data, list) and any(isinstance(item, str) for item in data):
        decoded = []
        for item in data:
            if isinstance(item, str):
                try:
                    item = json.loads(item)
                except ValueError:
                    return None, "Each item of data must be a JSON object"
            decoded.append(item)
        data = decoded
    return data, None


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` or ``OAuth …`` header."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    return None
