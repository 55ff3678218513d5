"""Meta Conversions API destinations for Django."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "forget", "track", "track_many"]


def __getattr__(name: str) -> Any:
    # The public entry points live in ingest.py, which imports models; importing them lazily keeps
    # `import capi_destinations` safe before Django's app registry is ready (settings, AppConfig).
    if name in ("track", "track_many"):
        from capi_destinations import ingest

        return getattr(ingest, name)
    if name == "forget":
        from capi_destinations import click_memory

        return click_memory.forget
    raise AttributeError(f"module 'capi_destinations' has no attribute {name!r}")
