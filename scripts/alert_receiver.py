"""A webhook receiver for trying alerts locally: prints each alert and checks its signature.

    .venv/bin/python scripts/alert_receiver.py [--port 8799] [--secret whsec_…]

Add a channel on the demo's Alerts page (as `agency`) of kind Webhook or Slack with the URL
http://127.0.0.1:8799/ (the demo site allows http and loopback addresses with DEBUG on), paste
the signing secret it shows into ``--secret`` (or CAPI_ALERT_SECRET), and press Send test alert.
The verification is the one README → Alerts → "Verifying a webhook" documents.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """README's check: ``sha256=`` + HMAC-SHA256(secret, timestamp + "." + body), fresh stamp."""
    timestamp = headers.get("X-Capi-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(
        "sha256=" + expected.hexdigest(), headers.get("X-Capi-Signature", "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--secret", default=os.environ.get("CAPI_ALERT_SECRET", ""))
    options = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            if "X-Capi-Signature" not in headers:
                verdict = "no signature (a Slack message)"
            elif not options.secret:
                verdict = "signed (pass --secret to verify)"
            else:
                verdict = (
                    "signature OK" if verify(options.secret, headers, body) else "BAD signature"
                )
            print(f"--- alert, {verdict}")
            print(json.dumps(json.loads(body or b"{}"), indent=2, ensure_ascii=False), flush=True)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(verdict.encode())

        def log_message(self, format: str, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", options.port), Handler)
    print(f"Waiting for alerts on http://127.0.0.1:{options.port}/ (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
