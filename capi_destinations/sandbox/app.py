"""The sandbox's WSGI app: Meta's two Graph API calls plus a control API under ``/_sandbox/``.

Graph API (same paths, parameters and JSON shapes as Meta):

* ``POST /{version}/{pixel_id}/events`` with ``data``, ``access_token``, ``test_event_code``,
  ``partner_agent``, ``appsecret_proof`` (+ ``appsecret_time``) as a JSON body, as a form body
  (the official SDK's way, ``data`` a JSON array of JSON-encoded events) or as query parameters;
  the token may also come as ``Authorization: Bearer …`` / ``OAuth …``.
* ``GET /{version}/{pixel_id}?fields=id,name,…``.
* ``GET /{version}/dataset_quality?dataset_id={pixel_id}&fields=web{…}``: Meta's Dataset Quality
  API, with Event Match Quality scores the sandbox derives from the events it received for the
  pixel (its own approximation, see :mod:`capi_destinations.sandbox.quality`). A send-only token
  is refused as its read of the pixel is.

Control API (JSON; see README "The Graph API sandbox"): ``POST /_sandbox/pixels``,
``POST /_sandbox/revoke``, ``GET|POST /_sandbox/faults``, ``POST /_sandbox/answers``,
``POST /_sandbox/reset``, ``GET /_sandbox/events``, ``GET /_sandbox/stats``,
``GET /_sandbox/requests``.

The app knows nothing of this project's models or Django settings; it can be served by any
WSGI server, but dropping a connection (:class:`DropConnection`) needs the sandbox's own server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from capi_destinations.sandbox import errors, quality
from capi_destinations.sandbox.errors import GraphAnswerError, new_fbtrace_id
from capi_destinations.sandbox.state import RawData, SandboxState, ScriptedAnswer, parse_version
from capi_destinations.sandbox.validation import validate_events, validate_partner_agent
from capi_destinations.sandbox.wire import (
    bearer_token,
    decode_data,
    first_values,
    parse_body,
    read_body,
)

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Any]

REDACTED = "[redacted]"
SECRET_PARAMETERS = ("access_token", "appsecret_proof")
PIXEL_FIELDS = frozenset({"id", "name", "last_fired_time", "is_unavailable", "owner_business"})
DEFAULT_PIXEL_FIELDS = ("id", "name")
SANDBOX_BUSINESS = {"id": "100000000000001", "name": "Sandbox business"}
APPSECRET_TIME_WINDOW_SECONDS = 300

_FIELD_NAME = re.compile(r"([A-Za-z_]+)(?:\{[^}]*\})?")


class DropConnection(Exception):
    """Raised by the app to make the server close the connection without any answer."""


class ControlError(Exception):
    """A control API call that cannot be carried out (answered with 400)."""


Answer = tuple[int, Any, dict[str, str]]


class SandboxApp:
    """A Graph API stand-in that validates like Meta and misbehaves on request.

    ``time_source`` gives "now" in Unix seconds (the 7 and 62-day windows, ``appsecret_time``);
    ``faults`` are initial fault settings (see :class:`~capi_destinations.sandbox.state.Faults`).
    A token is well-formed when it starts with ``token_prefix``, has only ASCII letters and
    digits and at least ``token_min_length`` characters.
    """

    def __init__(
        self,
        *,
        time_source: Callable[[], float] = time.time,
        token_prefix: str = "EAA",  # noqa: S107 (a prefix, not a secret)
        token_min_length: int = 32,
        **faults: Any,
    ) -> None:
        self.state = SandboxState(time_source)
        # Python-side only (tests): called with (method, path) after a Graph request was
        # handled and before its answer leaves, e.g. to break something while a client waits.
        self.before_answer: Callable[[str, str], None] | None = None
        self.token_prefix = token_prefix
        self.token_min_length = token_min_length
        if faults:
            self.state.set_faults(**faults)

    # --- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (WSGI entry point)."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "/") or "/"
        query = first_values(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        body = read_body(environ)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            status, payload, headers = self._control(method, path, query, body)
        else:
            status, payload, headers = self._graph(environ, method, path, query, body)
            if self.before_answer is not None:
                self.before_answer(method, path)
        if isinstance(payload, bytes):
            content = payload
            content_type = headers.pop("Content-Type", "text/html; charset=utf-8")
        else:
            content = json.dumps(payload, separators=(",", ":")).encode()
            content_type = "application/json; charset=UTF-8"
        response_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(content))),
            *headers.items(),
        ]
        start_response(f"{status} {_reason(status)}", response_headers)
        return [content]

    # --- Graph API ---------------------------------------------------------------------------

    def _graph(
        self,
        environ: WSGIEnviron,
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes,
    ) -> Answer:
        body_params, body_problem = parse_body(environ.get("CONTENT_TYPE", ""), body)
        params = {**query, **body_params}
        token = params.get("access_token") or bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        data, data_problem = decode_data(params.get("data"))
        # Accepted events are kept as the text they arrived in (decoded again on read-back):
        # holding a million parsed dicts would make Python's garbage collector the bottleneck.
        raw_data = (
            RawData(body, whole_body=True)
            if isinstance(body_params.get("data"), list)
            else RawData(str(params.get("data", "")), whole_body=False)
        )
        record = self._record_of(environ, method, path, params, data)
        fault, detail = self.state.begin_graph_request(record, method)
        latency_ms = self.state.latency_ms_for(path)
        if latency_ms:
            self.state.wait(latency_ms / 1000)
            if record["generation"] != self.state.generation:
                # Reset while this request waited: it belongs to an earlier test.
                raise DropConnection
        if fault != "none":
            faulted = self._fault_answer(record, fault, detail)
            if faulted is not None:
                return faulted

        status, payload, headers, pixel_id, problem = self._answer_graph(
            method, path, params, token, body_problem or data_problem, data, record, raw_data
        )
        if problem is not None:
            return self._error(record, pixel_id, problem)
        faults = self.state.faults
        if fault == "none" and faults.rate_limit_every and detail is not None:
            percent = round(100 * detail / faults.rate_limit_every)
            headers.update(_usage_headers(percent, 0))
        self.state.finish_graph_request(record, pixel_id, status, None)
        return status, payload, headers

    def _record_of(
        self,
        environ: WSGIEnviron,
        method: str,
        path: str,
        params: dict[str, Any],
        data: Any,
    ) -> dict[str, Any]:
        """What the control API shows of a Graph request: never a secret, never the events."""
        return {
            "method": method,
            "path": path,
            "params": {
                key: (REDACTED if key in SECRET_PARAMETERS else value)
                for key, value in params.items()
                if key != "data"
            },
            "authorization_header": bool(environ.get("HTTP_AUTHORIZATION")),
            "event_count": len(data) if isinstance(data, list) else None,
            "test_event_code": params.get("test_event_code") or "",
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
            "content_type": environ.get("CONTENT_TYPE", ""),
            "received_at": self.state.now(),
        }

    def _fault_answer(self, record: dict[str, Any], fault: str, detail: Any) -> Answer | None:
        """The answer of an injected fault or a scripted answer; None: answer as Meta would."""
        if fault == "scripted":
            answer: ScriptedAnswer = detail
            self.state.finish_graph_request(record, None, answer.status, _scripted_code(answer))
            if answer.drop:
                raise DropConnection
            if answer.text is not None:
                return answer.status, answer.text.encode(), dict(answer.headers)
            return answer.status, answer.body, dict(answer.headers)
        if fault == "drop":
            self.state.finish_graph_request(record, None, 0, None)
            raise DropConnection
        if fault == "fail":
            return self._error(record, None, errors.server_failure())
        if fault == "rate_limit":
            faults = self.state.faults
            headers = _usage_headers(100, faults.rate_limit_minutes)
            return self._error(record, None, errors.rate_limited(faults.rate_limit_code, headers))
        return None

    def _error(
        self, record: dict[str, Any], pixel_id: str | None, problem: GraphAnswerError
    ) -> Answer:
        body = problem.body()
        self.state.finish_graph_request(record, pixel_id, problem.http_status, problem.code)
        record["error"] = {
            key: value for key, value in body["error"].items() if key != "fbtrace_id"
        }
        headers = {"x-fb-trace-id": body["error"]["fbtrace_id"], **problem.headers}
        return problem.http_status, body, headers

    def _answer_graph(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        token: str | None,
        body_problem: str | None,
        data: Any,
        record: dict[str, Any],
        raw_data: RawData,
    ) -> tuple[int, Any, dict[str, str], str | None, GraphAnswerError | None]:
        if _is_dataset_quality(path):
            return self._answer_dataset_quality(method, path, params, token, body_problem)
        route = _route(method, path)
        if isinstance(route, GraphAnswerError):
            return 400, None, {}, None, route
        version, pixel_id, is_events = route
        deprecated = self._deprecated(version)
        if deprecated is not None:
            return 400, None, {}, None, deprecated
        problem = self._check_access(method, pixel_id, token, params)
        if problem is None and body_problem is not None:
            problem = errors.invalid_body(body_problem)
        if problem is not None:
            return 400, None, {}, pixel_id, problem

        if is_events:
            return self._receive_events(pixel_id, params, data, record, raw_data)
        if method == "POST":
            return 400, None, {}, pixel_id, errors.unknown_object(method, pixel_id)
        return self._describe_pixel(pixel_id, params.get("fields"))

    def _answer_dataset_quality(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        token: str | None,
        body_problem: str | None,
    ) -> tuple[int, Any, dict[str, str], str | None, GraphAnswerError | None]:
        """Meta's ``GET /dataset_quality``: the token, the dataset, the proof, then the scores.

        The dataset is read like the pixel node, so a send-only token (or one without access)
        gets the same code 100 / 33 refusal naming the dataset ID (*unconfirmed*: Meta
        publishes no refusal body for this endpoint).
        """
        segments = [segment for segment in path.split("/") if segment]
        deprecated = self._deprecated(segments[0] if len(segments) == 2 else None)
        if deprecated is not None:
            return 400, None, {}, None, deprecated
        dataset_id = str(params.get("dataset_id") or "")
        problem = self._check_token(token)
        if problem is None and method != "GET":
            problem = errors.unknown_object(method, "dataset_quality")
        if problem is None and not dataset_id:
            problem = errors.missing_parameter("dataset_id")
        if problem is None:
            problem = self._check_pixel("GET", dataset_id, token or "")
        if problem is None:
            problem = self._check_appsecret_proof(dataset_id, token or "", params)
        if problem is None and body_problem is not None:
            problem = errors.invalid_body(body_problem)
        pixel_id = dataset_id if dataset_id.isdigit() else None
        if problem is not None:
            return 400, None, {}, pixel_id, problem
        body = quality.dataset_quality(self.state.events(pixel_id=dataset_id), now=self.state.now())
        return 200, body, {"x-fb-trace-id": new_fbtrace_id()}, pixel_id, None

    def _deprecated(self, version: str | None) -> GraphAnswerError | None:
        """Code 2635 for a version older than the oldest one served (none named: the default)."""
        if version is None:
            return None
        oldest = self.state.faults.oldest_version
        parsed_oldest = parse_version(oldest)
        parsed_version = parse_version(version)
        if parsed_oldest and parsed_version and parsed_version < parsed_oldest:
            return errors.deprecated_version(version, oldest)
        return None

    def _check_access(
        self, method: str, pixel_id: str, token: str | None, params: dict[str, Any]
    ) -> GraphAnswerError | None:
        """The token, then the pixel, then the appsecret_proof, as Meta checks them."""
        problem = self._check_token(token)
        if problem is None:
            problem = self._check_pixel(method, pixel_id, token or "")
        if problem is None:
            problem = self._check_appsecret_proof(pixel_id, token or "", params)
        return problem

    def _check_token(self, token: str | None) -> GraphAnswerError | None:
        if not token:
            return errors.missing_token()
        reason = self.state.revoked.get(token)
        if reason == "expired":
            return errors.expired_token()
        if reason is not None:
            return errors.revoked_token()
        well_formed = (
            token.startswith(self.token_prefix)
            and len(token) >= self.token_min_length
            and token.isascii()
            and token.isalnum()
        )
        if not well_formed or (not self.state.is_open and not self.state.token_is_known(token)):
            return errors.unparseable_token()
        return None

    def _check_pixel(self, method: str, pixel_id: str, token: str) -> GraphAnswerError | None:
        if not pixel_id.isdigit():
            return errors.unknown_object(method, pixel_id)
        if self.state.is_open:
            return None
        pixel = self.state.pixel_for(pixel_id)
        if pixel is None or not pixel.allows(token, method):
            return errors.unknown_object(method, pixel_id)
        return None

    def _check_appsecret_proof(
        self, pixel_id: str, token: str, params: dict[str, Any]
    ) -> GraphAnswerError | None:
        pixel = self.state.pixel_for(pixel_id)
        if pixel is None or not pixel.app_secret:
            return None
        proof = params.get("appsecret_proof")
        if not proof or not isinstance(proof, str):
            return errors.missing_appsecret_proof()
        proof_time = params.get("appsecret_time")
        if proof_time is None:
            message = token
        else:
            seconds = str(proof_time)
            if not seconds.isdigit() or (
                abs(self.state.now() - int(seconds)) > APPSECRET_TIME_WINDOW_SECONDS
            ):
                return errors.invalid_appsecret_proof()
            message = f"{token}|{seconds}"
        expected = hmac.new(pixel.app_secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, proof):
            return errors.invalid_appsecret_proof()
        return None

    def _receive_events(
        self,
        pixel_id: str,
        params: dict[str, Any],
        data: Any,
        record: dict[str, Any],
        raw_data: RawData,
    ) -> tuple[int, Any, dict[str, str], str | None, GraphAnswerError | None]:
        problem = validate_events(data, now=self.state.now()) or validate_partner_agent(
            params.get("partner_agent")
        )
        if problem is not None:
            return 400, None, {}, pixel_id, problem
        test_event_code = params.get("test_event_code") or ""
        if not isinstance(test_event_code, str):
            return 400, None, {}, pixel_id, errors.invalid_body("test_event_code must be text")
        fbtrace_id = new_fbtrace_id()
        secrets = [params.get(name) for name in SECRET_PARAMETERS]
        if not self.state.record_events(
            pixel_id,
            record["id"],
            test_event_code,
            data,
            record["generation"],
            raw_data=raw_data.without(*(secret for secret in secrets if isinstance(secret, str))),
        ):
            raise DropConnection
        payload = {"events_received": len(data), "messages": [], "fbtrace_id": fbtrace_id}
        return 200, payload, {"x-fb-trace-id": fbtrace_id}, pixel_id, None

    def _describe_pixel(
        self, pixel_id: str, fields_param: object
    ) -> tuple[int, Any, dict[str, str], str | None, GraphAnswerError | None]:
        if isinstance(fields_param, str) and fields_param.strip():
            requested = _FIELD_NAME.findall(fields_param)
        else:
            requested = list(DEFAULT_PIXEL_FIELDS)
        for name in requested:
            if name not in PIXEL_FIELDS:
                return 400, None, {}, pixel_id, errors.nonexisting_field(name)
        pixel = self.state.pixel_for(pixel_id)
        values: dict[str, Any] = {
            "id": pixel_id,
            "name": pixel.name if pixel is not None else f"Sandbox pixel {pixel_id}",
            "is_unavailable": False,
            "owner_business": dict(SANDBOX_BUSINESS),
        }
        last_fired = self.state.last_fired_at(pixel_id)
        if last_fired is not None:
            values["last_fired_time"] = datetime.fromtimestamp(last_fired, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S+0000"
            )
        # Graph leaves out fields without a value; "id" is always part of the answer.
        payload = {name: values[name] for name in requested if name in values}
        payload.setdefault("id", pixel_id)
        fbtrace_id = new_fbtrace_id()
        return 200, payload, {"x-fb-trace-id": fbtrace_id}, pixel_id, None

    # --- control API -------------------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> Answer:
        route = path.rstrip("/").removeprefix("/_sandbox").lstrip("/") or "index"
        handler = self._control_routes().get((method, route))
        if handler is None:
            return 404, {"error": f"no control endpoint {method} {path}"}, {}
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "the body must be JSON"}, {}
        if not isinstance(payload, dict):
            return 400, {"error": "the body must be a JSON object"}, {}
        try:
            status, answer = handler(payload, query)
        except (ControlError, ValueError, TypeError) as problem:
            return 400, {"error": str(problem)}, {}
        return status, answer, {}

    def _control_routes(
        self,
    ) -> dict[tuple[str, str], Callable[[dict[str, Any], dict[str, str]], tuple[int, Any]]]:
        return {
            ("GET", "index"): lambda body, query: (200, {"sandbox": True}),
            ("GET", "pixels"): lambda body, query: (200, self.state.pixel_summaries()),
            ("POST", "pixels"): self._control_register_pixel,
            ("POST", "revoke"): self._control_revoke,
            ("GET", "faults"): lambda body, query: (200, self.state.fault_settings()),
            ("POST", "faults"): lambda body, query: (200, self.state.set_faults(**body)),
            ("POST", "answers"): self._control_answer_next,
            ("POST", "reset"): self._control_reset,
            ("GET", "events"): self._control_events,
            ("GET", "stats"): lambda body, query: (200, self.state.stats()),
            ("GET", "requests"): lambda body, query: (200, self.state.requests()),
        }

    def _control_register_pixel(
        self, body: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, Any]:
        pixel_id = str(body.get("pixel_id", ""))
        if not pixel_id.isdigit():
            raise ControlError("pixel_id must be digits")
        tokens = body.get("tokens", [])
        send_only = body.get("send_only_tokens", [])
        for name, value in (("tokens", tokens), ("send_only_tokens", send_only)):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ControlError(f"{name} must be a list of strings")
        pixel = self.state.register_pixel(
            pixel_id,
            body.get("name"),
            tokens,
            str(body.get("app_secret") or ""),
            send_only_tokens=send_only,
        )
        return 201, {"pixel_id": pixel.pixel_id, "name": pixel.name}

    def _control_revoke(self, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ControlError("token is required")
        self.state.revoke(token, str(body.get("reason", "revoked")))
        return 200, {"revoked": True}

    def _control_answer_next(self, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        answer = scripted_answer(**body)
        self.state.add_scripted_answer(answer)
        return 201, {"queued": answer.times}

    def _control_reset(self, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        self.state.reset()
        return 200, {"reset": True}

    def _control_events(self, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
        test = query.get("test")
        selected = self.state.events(
            pixel_id=query.get("pixel_id"),
            event_id=query.get("event_id"),
            event_name=query.get("event_name"),
            test_event_code=query.get("test_event_code"),
            test=None if test is None else test.lower() in ("1", "true", "yes"),
        )
        offset = int(query.get("offset", "0"))
        limit = int(query["limit"]) if "limit" in query else len(selected)
        return 200, {"count": len(selected), "events": selected[offset : offset + limit]}


def scripted_answer(
    *,
    status: int = 400,
    body: Any = None,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    times: int = 1,
    drop: bool = False,
    method: str | None = None,
    error: dict[str, Any] | None = None,
) -> ScriptedAnswer:
    """Build a canned answer; ``error={...}`` is a shortcut for the body ``{"error": {...}}``.

    ``text`` sends a raw (non-JSON) body, ``drop`` closes the connection instead of answering,
    ``method`` limits the answer to GET or POST requests.
    """
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ControlError("status must be an HTTP status code")
    if error is not None:
        body = {"error": {"fbtrace_id": new_fbtrace_id(), **error}}
    if body is None and text is None and not drop:
        raise ControlError("give a body, an error, a text or drop=true")
    return ScriptedAnswer(
        status=status,
        body=body,
        text=text,
        headers={str(key): str(value) for key, value in (headers or {}).items()},
        times=int(times),
        drop=bool(drop),
        method=method.upper() if method else None,
    )


def _scripted_code(answer: ScriptedAnswer) -> int | None:
    if isinstance(answer.body, dict) and isinstance(answer.body.get("error"), dict):
        code = answer.body["error"].get("code")
        return code if isinstance(code, int) else None
    return None


def _is_dataset_quality(path: str) -> bool:
    """``/dataset_quality`` or ``/{version}/dataset_quality``."""
    segments = [segment for segment in path.split("/") if segment]
    if len(segments) == 2 and parse_version(segments[0]) is not None:
        segments = segments[1:]
    return segments == ["dataset_quality"]


def _route(method: str, path: str) -> tuple[str | None, str, bool] | GraphAnswerError:
    """``(version, pixel_id, is_events)`` of a Graph path, or Meta's answer to a path it lacks.

    ``/{version}/{pixel_id}`` and ``/{version}/{pixel_id}/events``; the version may be left out
    (Meta then uses the app's default), but a ``v…`` segment that is not a version is refused.
    """
    segments = [segment for segment in path.split("/") if segment]
    version: str | None = None
    if segments and parse_version(segments[0]) is not None:
        version = segments[0]
        segments = segments[1:]
    elif segments and re.fullmatch(r"v\d.*", segments[0]):
        return errors.unknown_path(path)
    if not segments or len(segments) > 2:
        return errors.unknown_path(path)
    pixel_id = segments[0]
    is_events = len(segments) == 2
    if is_events and segments[1] != "events":
        return errors.unknown_path(path)
    if method not in ("GET", "POST") or (is_events and method != "POST"):
        return errors.unknown_object(method, pixel_id)
    return version, pixel_id, is_events


def _usage_headers(percent: int, minutes: int) -> dict[str, str]:
    """Meta's usage headers at ``percent`` of the limit, regaining access in ``minutes``."""
    usage = {"call_count": percent, "total_cputime": percent // 2, "total_time": percent // 2}
    business_usage = {
        SANDBOX_BUSINESS["id"]: [
            {"type": "ads_management", **usage, "estimated_time_to_regain_access": minutes}
        ]
    }
    return {
        "x-app-usage": json.dumps(usage, separators=(",", ":")),
        "x-business-use-case-usage": json.dumps(business_usage, separators=(",", ":")),
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
