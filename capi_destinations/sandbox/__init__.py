"""A local stand-in for Meta's Graph API: validates like Meta does, misbehaves on request.

``running_sandbox()`` starts one on a free port for tests; ``manage.py capi_sandbox`` serves
one for the demo. It knows nothing of this project's models or settings.
"""

from __future__ import annotations

from capi_destinations.sandbox.app import DropConnection, SandboxApp, scripted_answer
from capi_destinations.sandbox.server import Sandbox, make_sandbox, running_sandbox

__all__ = [
    "DropConnection",
    "Sandbox",
    "SandboxApp",
    "make_sandbox",
    "running_sandbox",
    "scripted_answer",
]
