"""The soak's handle on a running ``manage.py capi_sandbox``: its control API over HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any

Key = tuple[str, bool, str, str]


class SandboxControl:
    """Calls ``/_sandbox/…`` of the sandbox at ``url`` (faults, pixels, revocations, traffic)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback, our own sandbox)
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
            return json.loads(answer.read())

    def register_pixel(self, pixel_id: str, name: str, tokens: list[str]) -> None:
        """Register a pixel with the tokens allowed on it (replaces earlier tokens)."""
        self._call("POST", "pixels", {"pixel_id": pixel_id, "name": name, "tokens": tokens})

    def revoke(self, token: str) -> None:
        """Make the token fail from now on, as Meta does after a revocation."""
        self._call("POST", "revoke", {"token": token})

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change fault settings; returns all of them."""
        return self._call("POST", "faults", faults)

    def answer_error(self, code: int, *, times: int = 1, status: int = 400) -> None:
        """Answer the next ``times`` Graph requests with Meta's error ``code``."""
        self._call(
            "POST",
            "answers",
            {
                "status": status,
                "times": times,
                "method": "POST",
                "error": {"message": "Invalid parameter", "type": "OAuthException", "code": code},
            },
        )

    def stats(self) -> dict[str, Any]:
        """Counts per pixel, error codes, duplicates."""
        return self._call("GET", "stats")

    def traffic(self) -> tuple[Counter[Key], dict[Key, float]]:
        """How often each (pixel, test?, event_name, event_id) arrived, and when it first did."""
        answer = self._call("GET", "events")
        received: Counter[Key] = Counter()
        first: dict[Key, float] = {}
        for item in answer["events"]:
            key = (
                item["pixel_id"],
                bool(item["test_event_code"]),
                item["event_name"],
                item["event_id"],
            )
            received[key] += 1
            first.setdefault(key, float(item["received_at"]))
        return received, first
