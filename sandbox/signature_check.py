"""Explaining why a signature does not match, by trying each common integrator mistake.

Every hint comes from recomputing the signature the way the mistake would have made it and
comparing in constant time; nothing is guessed, and neither the secret nor the expected signature
is ever returned.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

from keys.crypto import signature_matches


@dataclass(frozen=True)
class Diagnosis:
    matches: bool
    hints: tuple[str, ...] = ()


def _digest(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha512).digest()


def _body_forms(body: bytes) -> list[bytes]:
    """The body as pasted, and with the browser's CRLF line breaks turned back into LF."""
    forms = [body]
    if b"\r\n" in body:
        forms.append(body.replace(b"\r\n", b"\n"))
    return forms


def _reserialised(body: bytes) -> list[bytes]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return []
    variants = [
        json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        json.dumps(payload, ensure_ascii=False),
        json.dumps(payload, indent=2, ensure_ascii=False),
        json.dumps(payload, indent=4, ensure_ascii=False),
        json.dumps(payload, separators=(",", ":")),
        json.dumps(payload),
    ]
    encoded = []
    for variant in variants:
        try:
            data = variant.encode()
        except UnicodeEncodeError:
            # A lone surrogate escape ("\ud83d") survives parsing but not UTF-8: no client could send it so.
            continue
        if data != body:
            encoded.append(data)
    return encoded


def _matches_any(secret: str, bodies: Iterable[bytes], signature: str) -> bool:
    return any(signature_matches(secret, candidate, signature) for candidate in bodies)


def diagnose(body: bytes, signature: str, *, secret: str, public_key: str, other_secrets: dict[str, str]) -> Diagnosis:
    """Does ``signature`` sign ``body`` with ``secret``? If not, which mistake explains it."""
    signature = signature.strip()
    bodies = _body_forms(body)
    if _matches_any(secret, bodies, signature):
        return Diagnosis(matches=True)

    hints = []
    digests = [_digest(secret, candidate) for candidate in bodies]
    encodings = {
        encoded
        for digest in digests
        for encoded in (
            base64.b64encode(digest).decode(),
            base64.urlsafe_b64encode(digest).decode(),
            base64.b64encode(digest).decode().rstrip("="),
            base64.urlsafe_b64encode(digest).decode().rstrip("="),
        )
    }
    if any(hmac.compare_digest(signature.encode(), encoded.encode()) for encoded in encodings if signature.isascii()):
        hints.append("The signature is Base64; the platform expects the HMAC-SHA512 digest as lowercase hexadecimal.")
    if signature != signature.lower() and _matches_any(secret, bodies, signature.lower()):
        hints.append("The signature is upper-case hexadecimal; send it in lower case.")

    newline_variants = []
    for candidate in bodies:
        newline_variants += [candidate + b"\n", candidate + b"\r\n"]
        if candidate.rstrip(b"\r\n") != candidate:
            newline_variants.append(candidate.rstrip(b"\r\n"))
    newline = _matches_any(secret, newline_variants, signature)
    if newline:
        hints.append(
            "The signature was made over the body with a different trailing newline (\\n or \\r\\n). "
            "Sign exactly the bytes you send, and send exactly the bytes you signed."
        )

    # Only where the newline does not explain it already: the stripped body is one of the newline's variants too.
    reserialised = [variant for candidate in bodies for variant in _reserialised(candidate)]
    stripped = [candidate.strip() for candidate in bodies if candidate.strip() != candidate]
    if not newline and _matches_any(secret, reserialised + stripped, signature):
        hints.append(
            "The signature matches the same JSON written differently (whitespace, pretty-printing or escaped "
            "characters such as \\u00e9): the body was re-serialised after signing (or before, differently). Sign "
            "the final bytes of the request body."
        )

    for other_public_key, other_secret in other_secrets.items():
        if _matches_any(other_secret, bodies, signature):
            hints.append(
                f"The signature was made with the secret of another API key of this merchant, {other_public_key}. "
                "Use the secret key of the active key."
            )
    if _matches_any(public_key, bodies, signature):
        hints.append("The body was signed with the API key itself. Sign with the secret key instead.")
    if not hints:
        hints.append(
            "No common mistake explains it. Check that you sign the exact request body bytes with the secret key "
            "of the active API key, and send the result as lowercase hex in X-Processing-Signature."
        )
    return Diagnosis(matches=False, hints=tuple(hints))
