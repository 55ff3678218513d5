"""``manage.py capi_sandbox``: serve the local Graph API sandbox until Ctrl-C."""

from __future__ import annotations

import signal
from argparse import ArgumentParser, ArgumentTypeError
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from capi_destinations.sandbox import SandboxApp, make_sandbox
from capi_destinations.sandbox.server import DEFAULT_HOST, DEFAULT_PORT


def parse_seed_pixel(value: str) -> tuple[str, str, str]:
    """``ID:NAME:TOKEN`` → ``(id, name, token)``; the name may itself contain colons."""
    pixel_id, _, rest = value.partition(":")
    name, _, token = rest.rpartition(":")
    if not pixel_id.isdigit() or not token:
        raise ArgumentTypeError(f"expected ID:NAME:TOKEN with a numeric ID, got {value!r}")
    return pixel_id, name or f"Sandbox pixel {pixel_id}", token


def build_sandbox_app(
    *,
    latency_ms: int = 0,
    failure_rate: float = 0.0,
    rate_limit_every: int = 0,
    drop_rate: float = 0.0,
    seed: int | None = None,
    seed_pixels: list[tuple[str, str, str]] | None = None,
) -> SandboxApp:
    """A sandbox app with these faults and pixels (tokens of one pixel id are merged)."""
    app = SandboxApp(
        latency_ms=latency_ms,
        failure_rate=failure_rate,
        rate_limit_every=rate_limit_every,
        drop_rate=drop_rate,
        seed=seed,
    )
    pixels: dict[str, tuple[str, list[str]]] = {}
    for pixel_id, name, token in seed_pixels or []:
        _, tokens = pixels.setdefault(pixel_id, (name, []))
        tokens.append(token)
    for pixel_id, (name, tokens) in pixels.items():
        app.state.register_pixel(pixel_id, name, tokens)
    return app


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Serve a local stand-in for Meta's Graph API (validates like Meta, injects faults). "
        "Point the app at it with CAPI_DESTINATIONS['GRAPH_API_BASE_URL']."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default=DEFAULT_HOST)
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument(
            "--latency-ms", type=int, default=0, help="Added to every Graph request."
        )
        parser.add_argument(
            "--failure-rate",
            type=float,
            default=0.0,
            help="Share (0 to 1) of Graph requests answered with a transient 500.",
        )
        parser.add_argument(
            "--rate-limit-every",
            type=int,
            default=0,
            help="Answer every Nth Graph request with a rate-limit error (code 613).",
        )
        parser.add_argument(
            "--drop-rate",
            type=float,
            default=0.0,
            help="Share (0 to 1) of Graph requests whose connection is closed unanswered.",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed of the fault draws.")
        parser.add_argument(
            "--seed-pixel",
            action="append",
            type=parse_seed_pixel,
            default=[],
            metavar="ID:NAME:TOKEN",
            help="Register a pixel and a token allowed on it (repeatable). Without any, the "
            "sandbox is open: any well-formed token works on any pixel.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            app = build_sandbox_app(
                latency_ms=options["latency_ms"],
                failure_rate=options["failure_rate"],
                rate_limit_every=options["rate_limit_every"],
                drop_rate=options["drop_rate"],
                seed=options["seed"],
                seed_pixels=options["seed_pixel"],
            )
            sandbox = make_sandbox(options["host"], options["port"], app=app)
        except (ValueError, OSError) as problem:
            raise CommandError(str(problem)) from problem
        mode = (
            f"{len(app.state.pixels)} pixel(s) registered"
            if app.state.pixels
            else "open: any well-formed token works on any pixel"
        )
        self.stdout.write(f"Graph API sandbox listening on {sandbox.url} ({mode})")
        # The host site's setting; the demo site also reads it from CAPI_GRAPH_API_BASE_URL.
        self.stdout.write(
            "Point the app at it in your settings: "
            f'CAPI_DESTINATIONS = {{"GRAPH_API_BASE_URL": "{sandbox.url}"}}'
        )
        self.stdout.write("Quit with Ctrl-C.")
        self.stdout.flush()
        # Ctrl-C and a plain `kill` both stop it cleanly, even when the parent process started
        # us with SIGINT ignored (shells and supervisors may do that for background jobs).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            sandbox.server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            self.stdout.write("Sandbox stopped.")
        finally:
            sandbox.server.close_connections()
            sandbox.server.server_close()
