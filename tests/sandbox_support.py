"""Shared steps of the sandbox API tests: key pairs made through the services, signed calls, error checks."""
from __future__ import annotations

import json
from dataclasses import dataclass


from dashboard.audit import RequestContext
from keys import crypto, services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey
from sandbox.models import ApiRequest

from . import helpers
from .helpers import fresh_code

CTX = RequestContext("198.51.100.7", "pytest")
MiB = 1024 * 1024
ALLOWED_IP = "198.51.100.7"
OTHER_IP = "203.0.113.9"
UNKNOWN_KEY = "sbx_" + "0" * 40

VECTOR_SECRET = "AbCdEfG123456"
VECTOR_BODY = b'{"currency":"BTC","foreign_id":"123456"}'
VECTOR_SIGNATURE = (
    "03c25fcf7cd35e7d995e402cd5d51edd72d48e1471e865907967809a0c189ba5"
    "5b90815f20e2bb10f82c7a9e9d865546fda58989c2ae9e8e2ff7bc29195fa1ec"
)

# The reference's error answers, exactly.
ERRORS = {
    "bad_content_format": (400, {"error": "Bad content format", "code": "bad_content_format"}),
    "required_header_key": (403, {"error": "No key header", "code": "required_header_key"}),
    "bad_header_key": (403, {"error": "Bad key header", "code": "bad_header_key"}),
    "required_header_signature": (403, {"error": "No signature header", "code": "required_header_signature"}),
    "bad_header_signature": (403, {"error": "Bad signature header", "code": "bad_header_signature"}),
    "ip_not_allowed": (403, {"error": "IP address is not allowed", "code": "ip_not_allowed"}),
    # The project's own, where the reference is silent.
    "body_too_large": (413, {"error": "Request body is larger than 1 MiB", "code": "body_too_large"}),
    "length_required": (411, {"error": "Send the body with a Content-Length header", "code": "length_required"}),
    "not_found": (404, {"error": "No such API method", "code": "not_found"}),
    "method_not_allowed": (405, {"error": "Method not allowed", "code": "method_not_allowed"}),
    "service_unavailable": (503, {"error": "Service temporarily unavailable", "code": "service_unavailable"}),
}


# Helpers shared by the sandbox test files


@dataclass(frozen=True)
class KeyPair:
    """An API key and the plaintext secret shown once at its first activation."""

    key: ApiKey
    secret: str

    @property
    def public_key(self) -> str:
        return self.key.public_key

    def fresh(self) -> ApiKey:
        return ApiKey.objects.get(pk=self.key.pk)


def generate_key(clock, owner, merchant, name: str = "") -> ApiKey:
    return services.generate_key(actor=owner, merchant=merchant, name=name, code=fresh_code(clock, owner), context=CTX)


def activate_new_key(clock, owner, merchant, allowlist: str = "", name: str = "") -> KeyPair:
    """Generate and activate a key through the services, as an Owner does in the dashboard."""
    key = generate_key(clock, owner, merchant, name)
    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=key.pk, allowlist=parse_allowlist(allowlist),
        code=fresh_code(clock, owner), context=CTX,
    )
    assert result.secret is not None
    return KeyPair(result.key, result.secret)


def deactivate(clock, owner, merchant, pair_or_key) -> ApiKey:
    key = pair_or_key.key if isinstance(pair_or_key, KeyPair) else pair_or_key
    return services.deactivate_key(
        actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX
    )


UNSET = object()


def api(
    client, path: str = "accounts/list", *, pair: KeyPair | None = None, body: bytes = b"{}", key=UNSET,
    signature=UNSET, secret=UNSET, content_type: str | None = "application/json", method: str = "POST", **extra,
):
    """Call /api/v2/<path>. With ``pair``, the key header and a correct signature are filled in.

    ``key=None`` / ``signature=None`` leave the header out; ``secret`` signs with another secret.
    """
    if key is UNSET:
        key = pair.public_key if pair is not None else None
    if signature is UNSET:
        signing_secret = secret if secret is not UNSET else (pair.secret if pair is not None else None)
        signature = crypto.sign(signing_secret, body) if signing_secret is not None else None
    if key is not None:
        extra["HTTP_X_PROCESSING_KEY"] = key
    if signature is not None:
        extra["HTTP_X_PROCESSING_SIGNATURE"] = signature
    if content_type is not None:
        # Set in META too: the test client leaves CONTENT_TYPE out when the body is empty.
        extra.setdefault("CONTENT_TYPE", content_type)
    return client.generic(method, f"/api/v2/{path}", body, content_type=content_type or "", **extra)


def assert_error(response, code: str) -> None:
    status, body = ERRORS[code]
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == body


def address_logged_last() -> str | None:
    """The client address of the last request the log holds: what the "API requests" tab shows."""
    return ApiRequest.objects.order_by("-id").values_list("ip_address", flat=True).first()


def assert_accepted(response) -> dict:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/json"
    answer = json.loads(response.content)
    assert isinstance(answer["data"], list) and answer["data"]
    return answer
