#!/usr/bin/env python3
"""A minimal client for the sandbox API, standard library only.

    python examples/sandbox_client.py --base-url http://127.0.0.1:8000 \
        --key=sbx_... --secret=... accounts/list

The key and secret may also come from PROCESSING_KEY and PROCESSING_SECRET. It prints the
fingerprint of the secret it was given (compare it with the dashboard's), the status, and the JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.request


def sign(secret: str, body: bytes) -> str:
    """X-Processing-Signature: HMAC-SHA512 of the exact body bytes, as lowercase hex."""
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


def fingerprint(secret: str) -> str:
    """The first 8 hex characters of SHA-256 of the secret, as the dashboard shows next to the key."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


class NotJson(ValueError):
    """The server answered, but not with JSON: not the sandbox API (a wrong --base-url, a proxy's error page)."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        first_line = body.decode("utf-8", "replace").strip().splitlines()[0][:120] if body.strip() else ""
        super().__init__(f"HTTP {status}, {content_type or 'no Content-Type'}, not JSON: {first_line!r}")
        self.status = status


def _json_of(status: int, content_type: str, body: bytes):
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise NotJson(status, content_type, body) from None


def call(base_url: str, method: str, key: str, secret: str, payload: dict | None = None, timeout: float = 10):
    """POST ``payload`` to /api/v2/<method>, signed; returns (status, parsed JSON body).

    Raises NotJson when the answer is not JSON, OSError when there is none."""
    # Serialise once and sign those bytes: re-serialising after signing is the classic mistake.
    body = json.dumps(payload or {}, separators=(",", ":")).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/api/v2/{method.lstrip('/')}",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Processing-Key": key,
            "X-Processing-Signature": sign(secret, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json_of(response.status, response.headers.get("Content-Type"), response.read())
    except urllib.error.HTTPError as error:
        return error.code, _json_of(error.code, error.headers.get("Content-Type"), error.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", nargs="?", default="accounts/list", help="e.g. accounts/list or currencies/list")
    parser.add_argument("--base-url", default=os.environ.get("PROCESSING_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("PROCESSING_KEY"))
    parser.add_argument("--secret", default=os.environ.get("PROCESSING_SECRET"))
    args = parser.parse_args(argv)
    if not args.key or not args.secret:
        parser.error("give --key and --secret (or PROCESSING_KEY and PROCESSING_SECRET)")
    print(f"secret fingerprint: {fingerprint(args.secret)}", file=sys.stderr)
    try:
        status, answer = call(args.base_url, args.method, args.key, args.secret)
    except OSError as error:  # urllib.error.URLError is one
        # No answer at all (nothing listening, a wrong host): say where it looked, not a traceback.
        reason = getattr(error, "reason", error)
        print(f"no answer from {args.base_url}: {reason} (is the server running? see --base-url)", file=sys.stderr)
        return 2
    except NotJson as error:
        print(f"{args.base_url} answered {error} (is it the sandbox? see --base-url)", file=sys.stderr)
        return 2
    print(f"HTTP {status}", file=sys.stderr)
    print(json.dumps(answer, indent=2))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
