"""What one sandbox instance remembers: pixels, tokens, faults, scripted answers, and traffic.

Everything lives behind one lock because request threads and the test's control calls touch it
at the same time. Accepted events are kept as the text they arrived in (token removed) plus a
small index of plain tuples, and parsed again only when read back: a million live parsed dicts
would make Python's cyclic garbage collector the bottleneck of a busy sandbox. Per-pixel
counters and the duplicate tally are kept up to date as events arrive, so statistics over
200,000 events stay cheap.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from capi_destinations.sandbox.wire import decode_data

RATE_LIMIT_CODES = (4, 17, 613, 80004)
_VERSION = re.compile(r"v(\d+)\.(\d+)")


def parse_version(version: str) -> tuple[int, int] | None:
    """``"v26.0"`` → ``(26, 0)``; None when it is not a Graph API version string."""
    match = _VERSION.fullmatch(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class Faults:
    """Misbehaviour to inject into Graph API answers (never into the control API)."""

    # Added to every Graph request before it is answered; above the client's read timeout
    # it makes the request hang.
    latency_ms: int = 0
    # Extra latency for the Graph requests of some pixels only, {pixel_id: ms}, so one slow or
    # hanging pixel can be tested beside healthy ones.
    pixel_latency_ms: dict[str, int] = field(default_factory=dict)
    # Share of Graph requests answered with a transient 500 (code 2), 0.0 to 1.0.
    failure_rate: float = 0.0
    # Every Nth Graph request is answered with a rate-limit error; 0 = never.
    rate_limit_every: int = 0
    # Which rate-limit error: 4, 17, 613 or 80004.
    rate_limit_code: int = 613
    # Minutes reported in estimated_time_to_regain_access when rate limiting.
    rate_limit_minutes: int = 1
    # Share of Graph requests whose connection is closed without any answer, 0.0 to 1.0.
    drop_rate: float = 0.0
    # The next N Graph requests have their connection closed without any answer.
    drop_next: int = 0
    # The sandbox's "now" as Unix seconds for the 7 and 62-day windows; None = its time source.
    now: float | None = None
    # Versions older than this are answered with code 2635 (deprecated version).
    oldest_version: str = "v21.0"
    # Seed of the random draws of failure_rate and drop_rate, for repeatable runs.
    seed: int | None = None

    @classmethod
    def names(cls) -> frozenset[str]:
        """The names :meth:`SandboxState.set_faults` accepts."""
        return frozenset(item.name for item in fields(cls))


@dataclass
class ScriptedAnswer:
    """A canned answer for the next ``times`` Graph requests (optionally of one method)."""

    status: int = 400
    body: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    drop: bool = False
    method: str | None = None


@dataclass
class Pixel:
    """A registered pixel, the tokens allowed on it and, optionally, its app's secret.

    ``send_only_tokens`` may send events but not read the pixel: Meta says a token made "via
    the Conversions API inside the dataset settings" is "limited to sending data only to Meta.
    The token can't be used to run API GET data requests" (Conversions API end-to-end
    implementation guide, "Integration as a platform"). Their GET is refused like a token
    without access (code 100, subcode 33).
    """

    pixel_id: str
    name: str
    tokens: set[str]
    app_secret: str = ""
    send_only_tokens: set[str] = field(default_factory=set)

    def allows(self, token: str, method: str) -> bool:
        """Whether ``token`` may make this request (GET reads, POST sends) on the pixel."""
        if token in self.tokens:
            return True
        return method == "POST" and token in self.send_only_tokens


@dataclass(frozen=True)
class RawData:
    """One request's events as the text they arrived in, decoded only when read back.

    ``whole_body``: the text is a JSON request body whose ``data`` key holds the events;
    otherwise it is the ``data`` parameter itself.
    """

    text: bytes | str
    whole_body: bool

    def without(self, *secrets: str) -> RawData:
        """A copy with each secret (token, proof) replaced, so none is kept in memory."""
        text = self.text
        for secret in secrets:
            if not secret:
                continue
            if isinstance(text, bytes):
                text = text.replace(secret.encode(), b"[redacted]")
            else:
                text = text.replace(secret, "[redacted]")
        return RawData(text, self.whole_body)

    def decode(self) -> list[Any]:
        """The events, parsed again."""
        data = json.loads(self.text)["data"] if self.whole_body else self.text
        events, _ = decode_data(data)
        return events if isinstance(events, list) else []


@dataclass
class _PixelCounts:
    requests: int = 0
    events: int = 0
    test_events: int = 0
    errors: int = 0


class SandboxState:
    """The registry, fault settings and traffic record of one sandbox, safe across threads."""

    def __init__(self, time_source: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._time_source = time_source
        self._wakeup = threading.Event()
        # Bumped by reset(); a request started before a reset may not touch the new state.
        self.generation = 0
        self._clear()

    # --- lifecycle -------------------------------------------------------------------------

    def _clear(self) -> None:
        self.pixels: dict[str, Pixel] = {}
        self.revoked: dict[str, str] = {}
        self.faults = Faults()
        self._random = random.Random()
        self._scripted: list[ScriptedAnswer] = []
        self._batches: list[RawData] = []
        # (batch, position, pixel_id, request_id, test_event_code, event_name, event_id,
        # received_at) per accepted event.
        self._index: list[tuple[int, int, str, str, str, Any, str | None, float]] = []
        self._requests: list[dict[str, Any]] = []
        self._graph_request_count = 0
        self._pixel_counts: dict[str, _PixelCounts] = {}
        self._error_counts: Counter[str] = Counter()
        # (pixel_id, is_test, event_name, event_id) → times received.
        self._seen: Counter[tuple[str, bool, str, str]] = Counter()
        self._last_fired: dict[str, float] = {}

    def reset(self) -> None:
        """Forget everything: pixels, revocations, faults, scripted answers and traffic.

        Requests still waiting out an injected latency are woken up so they do not hold
        their threads; they belong to the previous generation and are dropped unanswered,
        so nothing they carry lands in the fresh state.
        """
        with self._lock:
            self._clear()
            self.generation += 1
            self._wakeup.set()
            self._wakeup = threading.Event()

    def set_time_source(self, time_source: Callable[[], float]) -> None:
        """Use ``time_source()`` (Unix seconds) as "now" unless the ``now`` fault is set."""
        self._time_source = time_source

    def now(self) -> float:
        """The sandbox's current time in Unix seconds."""
        fixed = self.faults.now
        return fixed if fixed is not None else self._time_source()

    def latency_ms_for(self, path: str) -> float:
        """Injected latency of a Graph request to ``path``: the global one plus its pixel's."""
        faults = self.faults
        if not faults.pixel_latency_ms:
            return faults.latency_ms
        segments = [segment for segment in path.split("/") if segment]
        if segments and parse_version(segments[0]) is not None:
            segments = segments[1:]
        extra = faults.pixel_latency_ms.get(segments[0], 0) if segments else 0
        return faults.latency_ms + extra

    def wait(self, seconds: float) -> None:
        """Wait out injected latency; :meth:`reset` cuts the wait short."""
        self._wakeup.wait(seconds)

    # --- registry --------------------------------------------------------------------------

    def register_pixel(
        self,
        pixel_id: str,
        name: str | None = None,
        tokens: Iterable[str] = (),
        app_secret: str = "",
        send_only_tokens: Iterable[str] = (),
    ) -> Pixel:
        """Register (or replace) a pixel and the tokens allowed on it.

        Once any pixel is registered the sandbox stops being open: only registered pixels
        exist and only their tokens are known. ``send_only_tokens`` may send events but their
        reads of the pixel are refused (see :class:`Pixel`).
        """
        pixel = Pixel(
            pixel_id=str(pixel_id),
            name=name or f"Sandbox pixel {pixel_id}",
            tokens=set(tokens),
            app_secret=app_secret or "",
            send_only_tokens=set(send_only_tokens),
        )
        with self._lock:
            self.pixels[pixel.pixel_id] = pixel
        return pixel

    def revoke(self, token: str, reason: str = "revoked") -> None:
        """Make ``token`` fail from now on: ``reason`` is ``"revoked"`` or ``"expired"``."""
        if reason not in ("revoked", "expired"):
            raise ValueError("reason must be 'revoked' or 'expired'")
        with self._lock:
            self.revoked[token] = reason

    @property
    def is_open(self) -> bool:
        """True while no pixel is registered: any well-formed token works on any pixel."""
        return not self.pixels

    def pixel_for(self, pixel_id: str) -> Pixel | None:
        """The registered pixel with this id, if any."""
        return self.pixels.get(pixel_id)

    def token_is_known(self, token: str) -> bool:
        """True when some registered pixel allows ``token``."""
        return any(
            token in pixel.tokens or token in pixel.send_only_tokens
            for pixel in list(self.pixels.values())
        )

    def pixel_summaries(self) -> list[dict[str, Any]]:
        """Registered pixels without their tokens or secrets."""
        with self._lock:
            return [
                {
                    "pixel_id": pixel.pixel_id,
                    "name": pixel.name,
                    "token_count": len(pixel.tokens) + len(pixel.send_only_tokens),
                    "requires_appsecret_proof": bool(pixel.app_secret),
                }
                for pixel in self.pixels.values()
            ]

    # --- faults ----------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change some fault settings (others stay); returns all of them."""
        unknown = sorted(set(changes) - Faults.names())
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        candidate = Faults(**{**asdict(self.faults), **changes})
        _check_faults(candidate)
        with self._lock:
            self.faults = candidate
            if "seed" in changes:
                self._random.seed(candidate.seed)
            return asdict(candidate)

    def fault_settings(self) -> dict[str, Any]:
        """The current fault settings."""
        return asdict(self.faults)

    def add_scripted_answer(self, answer: ScriptedAnswer) -> None:
        """Queue a canned answer for the next ``answer.times`` Graph requests."""
        if answer.times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._scripted.append(answer)

    def begin_graph_request(self, record: dict[str, Any], method: str) -> tuple[str, Any]:
        """Count a Graph request, keep its record, and decide which fault (if any) it gets.

        Returns ``(kind, detail)`` with kind one of ``"scripted"``, ``"drop"``, ``"fail"``,
        ``"rate_limit"`` or ``"none"``; for rate limiting, detail is the request's position
        in the rate-limit cycle (for the usage headers).
        """
        with self._lock:
            record["generation"] = self.generation
            self._graph_request_count += 1
            count = self._graph_request_count
            record["id"] = f"req-{count}"
            self._requests.append(record)
            faults = self.faults
            for position, answer in enumerate(self._scripted):
                if answer.method is None or answer.method == method:
                    answer.times -= 1
                    if answer.times <= 0:
                        del self._scripted[position]
                    return "scripted", answer
            if faults.drop_next > 0:
                faults.drop_next -= 1
                return "drop", None
            if faults.drop_rate and self._random.random() < faults.drop_rate:
                return "drop", None
            if faults.failure_rate and self._random.random() < faults.failure_rate:
                return "fail", None
            if faults.rate_limit_every:
                position = count % faults.rate_limit_every
                return ("rate_limit" if position == 0 else "none"), position
            return "none", None

    # --- traffic ---------------------------------------------------------------------------

    def record_events(
        self,
        pixel_id: str,
        request_id: str,
        test_event_code: str,
        events: list[dict[str, Any]],
        generation: int,
        *,
        raw_data: RawData | None = None,
    ) -> bool:
        """Keep accepted events and update the per-pixel counters and duplicate tally.

        ``raw_data`` is the events' text as received (kept instead of ``events``, which are
        only read here); without it the events are serialized. Returns False (keeping
        nothing) when the sandbox was reset since the request began.
        """
        if raw_data is None:
            raw_data = RawData(json.dumps(events, separators=(",", ":")), whole_body=False)
        received_at = self.now()
        is_test = bool(test_event_code)
        names: list[Any] = [event.get("event_name") for event in events]
        event_ids = [_event_id_text(event.get("event_id")) for event in events]
        keys = [
            (pixel_id, is_test, name, event_id)
            for name, event_id in zip(names, event_ids, strict=True)
            if event_id is not None
        ]
        with self._lock:
            if generation != self.generation:
                return False
            batch = len(self._batches)
            self._batches.append(raw_data)
            # Tuples of strings and numbers: the garbage collector stops tracking them.
            self._index.extend(
                (
                    batch,
                    position,
                    pixel_id,
                    request_id,
                    test_event_code,
                    name,
                    event_id,
                    received_at,
                )
                for position, (name, event_id) in enumerate(zip(names, event_ids, strict=True))
            )
            self._seen.update(keys)
            counts = self._pixel_counts.setdefault(pixel_id, _PixelCounts())
            if is_test:
                counts.test_events += len(events)
            else:
                counts.events += len(events)
            self._last_fired[pixel_id] = received_at
        return True

    def finish_graph_request(
        self, record: dict[str, Any], pixel_id: str | None, status: int, error_code: int | None
    ) -> None:
        """Note the answer a Graph request got, for the request log and the counters."""
        with self._lock:
            record["status"] = status
            record["error_code"] = error_code
            if pixel_id is not None:
                counts = self._pixel_counts.setdefault(pixel_id, _PixelCounts())
                counts.requests += 1
                if error_code is not None:
                    counts.errors += 1
            if error_code is not None:
                self._error_counts[str(error_code)] += 1

    def last_fired_at(self, pixel_id: str) -> float | None:
        """When the pixel last received a live or test event, in Unix seconds."""
        return self._last_fired.get(pixel_id)

    def events(
        self,
        *,
        pixel_id: str | None = None,
        event_id: str | None = None,
        event_name: str | None = None,
        test_event_code: str | None = None,
        test: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Received events (oldest first) matching every filter given.

        Each is ``{"pixel_id", "request_id", "test_event_code", "event_name", "event_id",
        "received_at", "event"}`` with ``event`` the event as Meta would have received it.
        """
        with self._lock:
            selected = list(self._index)
            batches = list(self._batches)
        if pixel_id is not None:
            selected = [row for row in selected if row[2] == pixel_id]
        if event_id is not None:
            selected = [row for row in selected if row[6] == event_id]
        if event_name is not None:
            selected = [row for row in selected if row[5] == event_name]
        if test_event_code is not None:
            selected = [row for row in selected if row[4] == test_event_code]
        if test is not None:
            selected = [row for row in selected if bool(row[4]) == test]
        decoded: dict[int, list[Any]] = {}
        found = []
        for batch, position, pixel, request_id, code, name, identifier, received_at in selected:
            if batch not in decoded:
                decoded[batch] = batches[batch].decode()
            found.append(
                {
                    "pixel_id": pixel,
                    "request_id": request_id,
                    "test_event_code": code,
                    "event_name": name,
                    "event_id": identifier,
                    "received_at": received_at,
                    "event": decoded[batch][position],
                }
            )
        return found

    def requests(self) -> list[dict[str, Any]]:
        """The Graph requests as received (tokens and proofs already redacted), oldest first."""
        with self._lock:
            return [dict(record) for record in self._requests]

    def stats(self) -> dict[str, Any]:
        """Counts per pixel, totals, error codes and duplicates (by pixel, name and event_id).

        Test events (sent with a ``test_event_code``) are counted apart, as Meta's Test
        Events tab keeps them apart.
        """
        with self._lock:
            pixels = {pid: asdict(counts) for pid, counts in self._pixel_counts.items()}
            seen = list(self._seen.items())
            errors = dict(self._error_counts)
            request_count = self._graph_request_count
        duplicates: list[dict[str, Any]] = []
        test_duplicates: list[dict[str, Any]] = []
        for (pid, is_test, event_name, event_id), count in seen:
            if count > 1:
                entry = {
                    "pixel_id": pid,
                    "event_name": event_name,
                    "event_id": event_id,
                    "count": count,
                }
                (test_duplicates if is_test else duplicates).append(entry)
        return {
            "requests": request_count,
            "events": sum(item["events"] for item in pixels.values()),
            "test_events": sum(item["test_events"] for item in pixels.values()),
            "errors": errors,
            "pixels": pixels,
            "duplicates": duplicates,
            "test_duplicates": test_duplicates,
        }


def _event_id_text(event_id: object) -> str | None:
    if event_id is None or event_id == "":
        return None
    return event_id if isinstance(event_id, str) else str(event_id)


def _check_faults(faults: Faults) -> None:
    if not isinstance(faults.latency_ms, int | float) or faults.latency_ms < 0:
        raise ValueError("latency_ms must be a number ≥ 0")
    if not isinstance(faults.pixel_latency_ms, dict) or not all(
        isinstance(pixel_id, str) and isinstance(ms, int | float) and ms >= 0
        for pixel_id, ms in faults.pixel_latency_ms.items()
    ):
        raise ValueError("pixel_latency_ms must map pixel ids (text) to numbers ≥ 0")
    for name in ("failure_rate", "drop_rate"):
        rate = getattr(faults, name)
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"{name} must be between 0 and 1")
    for name in ("rate_limit_every", "drop_next", "rate_limit_minutes"):
        value = getattr(faults, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a whole number ≥ 0")
    if faults.rate_limit_code not in RATE_LIMIT_CODES:
        raise ValueError(f"rate_limit_code must be one of {RATE_LIMIT_CODES}")
    if faults.now is not None and not isinstance(faults.now, int | float):
        raise ValueError("now must be Unix seconds or null")
    if parse_version(faults.oldest_version) is None:
        raise ValueError("oldest_version must look like v21.0")
