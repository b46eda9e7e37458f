"""Authenticating a signed sandbox request, in the platform's order of checks.

1. X-Processing-Key present, and the key of an active pair;
2. X-Processing-Signature present, and the lowercase-hex HMAC-SHA512 of the exact body bytes;
3. the client address inside the key's allowlist (empty: any);
4. Content-Type application/json and a body that is valid JSON.
The first failing check raises its error from sandbox.errors; nothing else is looked at.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from decimal import Decimal

from django.db import router
from gunicorn.http.errors import ParseException

from dashboard.db_rows import read_as_health_check
from dashboard.settings_cache import until_settings_change
from keys import crypto
from keys.allowlist import is_address_allowed
from keys.models import ApiKey
from keys.secret_store import signature_verifier

from .errors import (
    BadContent, BadKey, BadSignature, BodyTooLarge, IpNotAllowed, LengthRequired, MissingKey, MissingSignature, Unavailable,
)
from .key_lookup_cache import cached_lookup, thread_connection
from .models import key_with_balances

logger = logging.getLogger("sandbox.authentication")

MAX_BODY_BYTES = 1024 * 1024
_PUBLIC_KEY_SHAPE = re.compile(r"sbx_[0-9a-f]{40}")
_PUBLIC_KEY_LENGTH = len("sbx_") + 40


@dataclass(slots=True)
class SignedRequest:
    key: ApiKey
    payload: object
    client_ip: str | None
    # The merchant's balances, when the endpoint asked for them with the key (find_key).
    balances: tuple[tuple[str, str, Decimal], ...] = ()


def read_body(request) -> bytes:
    """The body, refused before it is read when it announces more than 1 MiB, or once it is past 1 MiB when it
    comes in chunks."""
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return _read_chunked_body(request)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadContent() from None
    if length > MAX_BODY_BYTES:
        raise BodyTooLarge()
    # read(), not .body: the body property also checks it against DATA_UPLOAD_MAX_MEMORY_SIZE and copies it into
    # a new stream, 32k instructions a request against 4.5k (callgrind), for a body read once and never again.
    # The stream stops at CONTENT_LENGTH, already bounded above.
    return request.read()


def _read_chunked_body(request) -> bytes:
    """A body sent in chunks has no Content-Length, so Django's stream of it is empty: read the server's instead,
    where it ends with the last chunk (``wsgi.input_terminated``, as gunicorn's does), up to one byte past 1 MiB."""
    stream = request.META.get("wsgi.input")
    if stream is None:
        body = request.read(MAX_BODY_BYTES + 1)  # ASGI: the server joined the chunks into the body Django holds
    elif request.META.get("wsgi.input_terminated"):
        try:
            body = stream.read(MAX_BODY_BYTES + 1)
        except (ParseException, OSError, ValueError):
            raise BadContent() from None  # a chunk that is not one, or a client gone in the middle of the body
    else:
        raise LengthRequired()  # a server that cannot tell where such a body ends (Django's development server)
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    return body


def find_key(request, *, with_balances: bool = False) -> tuple[ApiKey | None, tuple[tuple[str, str, Decimal], ...]]:
    """The key the request names, whatever its status (the request log wants it), without raising; with
    ``with_balances``, also its merchant's balances, read by the same query (else none).

    The answer is kept until the database changes (sandbox.key_lookup_cache); both are shared with other
    requests, so read-only. The read, when there is one, is the request's first query, so it stands in for the
    connection's health check.
    """
    public_key = request.META.get("HTTP_X_PROCESSING_KEY", "")
    # A value that cannot be a key costs no query, and one of another length is not kept either. The full shape
    # is checked when the answer is not kept: a kept key was checked when it was read (the expression cost
    # a kept lookup about 2k of its instructions).
    if len(public_key) != _PUBLIC_KEY_LENGTH:
        return None, ()
    connection = thread_connection(_keys_database())
    # The reading function and its arguments, not a closure: a kept answer then costs no function made for it.
    return cached_lookup(connection, (public_key, with_balances), _read_key, connection, public_key, with_balances)


def _read_key(connection, public_key: str, with_balances: bool):
    if not _PUBLIC_KEY_SHAPE.fullmatch(public_key):
        return None, ()
    if with_balances:
        return read_as_health_check(connection, lambda: key_with_balances(public_key))
    return read_as_health_check(connection, lambda: (ApiKey.objects.with_public_key(public_key), ()))


@until_settings_change
def _keys_database() -> str:
    # The routers' answer depends on settings alone; asked on each request it cost 7,300 instructions.
    return router.db_for_read(ApiKey)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# One decoder for every request: json.loads() with an option builds a new one each call.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_WHITESPACE = " \t\n\r"  # RFC 8259's


def parse_json(body: bytes, content_type: str) -> object:
    if not is_json_media_type(content_type):
        raise BadContent()
    try:
        # JSON on the wire is UTF-8 (RFC 8259); json.loads would also guess UTF-16 and UTF-32 from bytes.
        text = body.decode("utf-8")
        # decode() as JSONDecoder.decode does it, with str methods for the whitespace around the value instead
        # of its two regular expressions.
        start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        payload, end = _JSON_DECODER.raw_decode(text, start)
        if end != len(text) and text[end:].strip(_JSON_WHITESPACE):
            raise ValueError("extra data after the JSON value")
        return payload
    except (ValueError, RecursionError):
        # ValueError covers invalid JSON and bytes that are not UTF-8; RecursionError, absurd nesting.
        raise BadContent() from None


@functools.lru_cache(maxsize=64)
def is_json_media_type(content_type: str) -> bool:
    # A client sends the same Content-Type on every request; its answer is kept (a few at most, as one client
    # spells it one way).
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def authenticate(request, key: ApiKey | None, body: bytes, client_ip: str | None) -> SignedRequest:
    """Run the four checks on a request whose key was looked up by ``find_key``."""
    if not request.META.get("HTTP_X_PROCESSING_KEY"):
        raise MissingKey()
    # SECURITY: unknown and inactive keys get the same answer: the API never says whether a key exists.
    if key is None or not key.is_usable:
        raise BadKey()
    signature = request.META.get("HTTP_X_PROCESSING_SIGNATURE")
    if not signature:
        raise MissingSignature()
    try:
        verifier = signature_verifier(key.public_key, key.encrypted_secret)
    except (crypto.DecryptionError, crypto.EncryptionKeyError):
        # SECURITY: fail closed; a secret we cannot read authenticates nothing.
        logger.error("secret of key %s cannot be decrypted; check KEYS_ENCRYPTION_KEYS", key.public_key)
        raise Unavailable() from None
    if not verifier.matches(body, signature):
        raise BadSignature()
    if not is_address_allowed(key.allowed_networks, client_ip or ""):
        raise IpNotAllowed()
    payload = parse_json(body, request.META.get("CONTENT_TYPE", ""))
    return SignedRequest(key=key, payload=payload, client_ip=client_ip)
