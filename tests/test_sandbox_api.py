"""The sandbox API under /api/v2/: the platform's paths, signature rule, error answers and order of checks.

Requests go through the whole stack (Django's test client, middleware included). Every refused request is
followed by a check that nothing changed: the key's "last used" stays as it was.

Shared steps are in ``tests/sandbox_support.py``; the key-pair fixtures are in ``tests/conftest.py``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import ipaddress
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError
from django.http import JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse
from django.utils import dateformat, timezone
from gunicorn.http.errors import InvalidChunkSize

from dashboard.models import Role
from keys import crypto, services
from keys.allowlist import parse_allowlist
from keys.models import ApiKey, KeyStatus
from keys.secret_store import seal_secret
from sandbox.models import ApiRequest, Balance, Currency
from sandbox.views import signed_endpoint

from . import helpers
from .helpers import fresh_code
from .sandbox_support import ALLOWED_IP, CTX, KeyPair, MiB, OTHER_IP, UNKNOWN_KEY, VECTOR_BODY, VECTOR_SECRET, VECTOR_SIGNATURE, activate_new_key, address_logged_last, api, assert_accepted, assert_error, deactivate, generate_key

# The reference test vector


def test_reference_vector_signs_and_verifies_with_the_projects_crypto():
    assert crypto.sign(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    assert crypto.signature_matches(VECTOR_SECRET, VECTOR_BODY, VECTOR_SIGNATURE)
    assert not crypto.signature_matches(VECTOR_SECRET, VECTOR_BODY + b" ", VECTOR_SIGNATURE)


def test_reference_vector_is_accepted_by_a_real_request(client, clock, vector_key):
    response = api(client, key=vector_key.public_key, body=VECTOR_BODY, signature=VECTOR_SIGNATURE)

    assert_accepted(response)
    assert ApiKey.objects.get(pk=vector_key.pk).last_used_at == timezone.now()


def test_reference_vector_signature_does_not_sign_a_reordered_body(client, clock, vector_key):
    reordered = b'{"foreign_id":"123456","currency":"BTC"}'

    response = api(client, key=vector_key.public_key, body=reordered, signature=VECTOR_SIGNATURE)

    assert_error(response, "bad_header_signature")
    assert ApiKey.objects.get(pk=vector_key.pk).last_used_at is None


# Endpoints


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping_answers_ok_without_authentication(client, method):
    response = client.generic(method, "/api/v2/ping")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    if method == "GET":
        assert response.content == b"OK"
    assert not ApiRequest.objects.exists()


@pytest.mark.django_db
def test_ping_refuses_post_with_json(client):
    assert_error(client.post("/api/v2/ping", b"{}", content_type="application/json"), "method_not_allowed")


def test_accounts_list_gives_this_merchants_balances_as_decimal_strings(client, clock, key_pair, merchant):
    Balance.objects.create(merchant=merchant, currency_id=1, amount=Decimal("0.04"))
    Balance.objects.create(merchant=merchant, currency_id=2, amount=Decimal("1500"))
    Balance.objects.create(merchant=merchant, currency_id=3, amount=Decimal("0.000000010000000000"))
    Balance.objects.create(merchant=merchant, currency_id=4, amount=Decimal("0"))
    # Another merchant's money is never part of the answer.
    Balance.objects.create(merchant=helpers.create_merchant(), currency_id=5, amount=Decimal("99"))

    response = api(client, pair=key_pair)

    answer = assert_accepted(response)
    expected_balances = {"BTC": "0.04", "ETH": "1500", "LTC": "0.00000001"}
    assert answer["data"] == [
        {"currency": currency.code, "type": currency.type, "balance": expected_balances.get(currency.code, "0")}
        for currency in Currency.objects.order_by("id")
    ]
    # Zero balances included for every currency, and no amount is ever a JSON number.
    assert len(answer["data"]) == Currency.objects.count() == 8
    json.loads(response.content, parse_float=lambda text: pytest.fail(f"float in the answer: {text}"))
    assert b'"balance": "0.04"' in response.content or b'"balance":"0.04"' in response.content


def test_accounts_list_reads_balances_as_data(client, clock, key_pair, merchant):
    balance = Balance.objects.create(merchant=merchant, currency_id=1, amount=Decimal("0.04"))
    assert api(client, pair=key_pair).json()["data"][0]["balance"] == "0.04"

    balance.amount = Decimal("2.5")
    balance.save()

    assert api(client, pair=key_pair).json()["data"][0] == {"currency": "BTC", "type": "crypto", "balance": "2.5"}


def test_currencies_list_has_the_reference_fields(client, clock, key_pair):
    response = api(client, "currencies/list", pair=key_pair)

    data = assert_accepted(response)["data"]
    assert data[0] == {
        "id": 1, "type": "crypto", "currency": "BTC", "minimum_amount": "0.0001", "deposit_fee_percent": "0.008",
        "withdrawal_fee_percent": "0", "precision": 8,
    }
    assert [row["currency"] for row in data] == list(Currency.objects.order_by("id").values_list("code", flat=True))
    for row in data:
        assert set(row) == {
            "id", "type", "currency", "minimum_amount", "deposit_fee_percent", "withdrawal_fee_percent", "precision",
        }
        assert type(row["id"]) is int and type(row["precision"]) is int
        assert row["type"] in {"crypto", "fiat"}
        for amount in ("minimum_amount", "deposit_fee_percent", "withdrawal_fee_percent"):
            assert re.fullmatch(r"\d+(\.\d*[1-9])?", row[amount]), row
    json.loads(response.content, parse_float=lambda text: pytest.fail(f"float in the answer: {text}"))


def test_any_valid_json_body_is_accepted_where_no_parameters_are_taken(client, clock, key_pair):
    for body in (b"{}", b"[]", b"null", b"0", b'"x"', b' {"a": [1, 2.5, {"b": null}]} \n', b'{"s":"\\ud83d"}',
                 '{"name":"Zoë ✓"}'.encode()):
        assert_accepted(api(client, pair=key_pair, body=body))


# Error answers, one by one


def test_missing_key_header(client, clock, key_pair):
    assert_error(api(client, key=None, signature=crypto.sign(key_pair.secret, b"{}")), "required_header_key")


@pytest.mark.parametrize("value", ["", UNKNOWN_KEY, "sbx_not-a-key", "SBX_" + "A" * 40])
def test_unknown_key(client, clock, key_pair, value):
    response = api(client, key=value, signature=crypto.sign(key_pair.secret, b"{}"))

    # An empty header is no header at all.
    assert_error(response, "required_header_key" if value == "" else "bad_header_key")
    assert key_pair.fresh().last_used_at is None


def test_missing_signature_header(client, clock, key_pair):
    assert_error(api(client, pair=key_pair, signature=None), "required_header_signature")
    assert_error(api(client, pair=key_pair, signature=""), "required_header_signature")
    assert key_pair.fresh().last_used_at is None


# drf-api-key style: one test over many ways of getting the signature wrong.
def _good(pair: KeyPair, body: bytes) -> str:
    return crypto.sign(pair.secret, body)


SIGNATURE_TAMPERINGS = {
    "upper-case": lambda pair, body: _good(pair, body).upper(),
    "truncated": lambda pair, body: _good(pair, body)[:-1],
    "extended": lambda pair, body: _good(pair, body) + "0",
    "first character changed": lambda pair, body: ("1" if _good(pair, body)[0] == "0" else "0") + _good(pair, body)[1:],
    "last character changed": lambda pair, body: _good(pair, body)[:-1] + ("1" if _good(pair, body)[-1] == "0" else "0"),
    "base64": lambda pair, body: base64.b64encode(bytes.fromhex(_good(pair, body))).decode(),
    "hmac-sha256": lambda pair, body: hmac.new(pair.secret.encode(), body, hashlib.sha256).hexdigest(),
    "plain sha512 of the body": lambda pair, body: hashlib.sha512(body).hexdigest(),
    "another secret": lambda pair, body: crypto.sign(pair.secret + "x", body),
    "signed with the public key": lambda pair, body: crypto.sign(pair.public_key, body),
    "whitespace around": lambda pair, body: " " + _good(pair, body) + " ",
    "trailing newline signed": lambda pair, body: crypto.sign(pair.secret, body + b"\n"),
    "non-ascii": lambda pair, body: "é" * 128,
}


@pytest.mark.parametrize("tampering", SIGNATURE_TAMPERINGS)
def test_bad_signature(client, clock, key_pair, tampering):
    signature = SIGNATURE_TAMPERINGS[tampering](key_pair, b"{}")

    assert_error(api(client, pair=key_pair, signature=signature), "bad_header_signature")
    assert key_pair.fresh().last_used_at is None


def test_signature_of_a_reserialised_body_is_refused(client, clock, key_pair):
    """The body is never parsed and re-serialised before the check: only the exact bytes count."""
    sent = b'{"a": 1,  "b": 2}'
    signature = crypto.sign(key_pair.secret, json.dumps(json.loads(sent), separators=(",", ":")).encode())

    assert_error(api(client, pair=key_pair, body=sent, signature=signature), "bad_header_signature")


def test_address_outside_the_allowlist_is_refused_and_logged_with_the_address_seen(client, clock, fenced_pair):
    response = api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP)

    assert_error(response, "ip_not_allowed")
    assert address_logged_last() == OTHER_IP
    assert fenced_pair.fresh().last_used_at is None


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"", "application/json"),
        (b"not json", "application/json"),
        (b'{"a":', "application/json"),
        (b"{}", "text/plain"),
        (b"{}", "application/x-www-form-urlencoded"),
        (b"{}", "multipart/form-data; boundary=xyz"),
        (b"{}", "application/jsonp"),
        (b"{}", "application/json-patch+json"),
        (b"{}", ""),
    ],
)
def test_bad_content_format(client, clock, key_pair, body, content_type):
    response = api(client, pair=key_pair, body=body, content_type=content_type)

    assert_error(response, "bad_content_format")
    assert key_pair.fresh().last_used_at is None


def test_body_over_one_mebibyte_is_refused_before_any_work(client, clock, key_pair, django_assert_num_queries):
    body = b"[" + b" " * MiB + b"]"  # valid JSON, correctly signed, MiB + 2 bytes
    with django_assert_num_queries(0):
        response = api(client, pair=key_pair, body=body)

    assert_error(response, "body_too_large")
    assert not ApiRequest.objects.exists()
    assert key_pair.fresh().last_used_at is None


def test_body_of_one_mebibyte_and_one_byte_is_too_large(client, clock, key_pair):
    body = b'"' + b"a" * (MiB - 1) + b'"'
    assert len(body) == MiB + 1
    assert_error(api(client, pair=key_pair, body=body), "body_too_large")


def test_body_of_exactly_one_mebibyte_is_accepted(client, clock, key_pair):
    body = b'"' + b"a" * (MiB - 2) + b'"'
    assert len(body) == MiB
    assert_accepted(api(client, pair=key_pair, body=body))


def chunked(client, pair: KeyPair, body: bytes, *, stream=None, terminated: bool = True):
    """A signed request whose body comes in chunks: no Content-Length; the server's stream gives the body, and
    says so (``wsgi.input_terminated``) when it ends with the last chunk, as gunicorn's does."""
    environ = {"wsgi.input": stream or io.BytesIO(body)}
    if terminated:
        environ["wsgi.input_terminated"] = True
    return client.generic("POST", "/api/v2/accounts/list", b"", CONTENT_TYPE="application/json",
                          HTTP_TRANSFER_ENCODING="chunked", HTTP_X_PROCESSING_KEY=pair.public_key,
                          HTTP_X_PROCESSING_SIGNATURE=crypto.sign(pair.secret, body), **environ)


class BrokenChunks(io.RawIOBase):
    """gunicorn's stream of a body whose chunks are not chunks."""

    def read(self, size=-1):
        raise InvalidChunkSize(b"zz")


def test_a_body_sent_in_chunks_is_the_body_checked(client, clock, key_pair):
    assert_accepted(chunked(client, key_pair, b'{"in": "chunks"}'))
    assert key_pair.fresh().last_used_at == timezone.now()


def test_a_body_sent_in_chunks_past_one_mebibyte_is_too_large(client, clock, key_pair):
    assert_error(chunked(client, key_pair, b'"' + b"a" * (MiB - 1) + b'"'), "body_too_large")
    assert key_pair.fresh().last_used_at is None


def test_a_body_in_chunks_that_are_not_chunks_is_bad_content(client, clock, key_pair):
    assert_error(chunked(client, key_pair, b"{}", stream=BrokenChunks()), "bad_content_format")
    assert key_pair.fresh().last_used_at is None


def test_a_body_in_chunks_to_a_server_that_cannot_end_it_asks_for_a_content_length(client, clock, key_pair):
    # Django's development server hands over a stream it cannot end: reading it would wait for the client.
    assert_error(chunked(client, key_pair, b"{}", terminated=False), "length_required")
    assert key_pair.fresh().last_used_at is None


def test_under_asgi_a_body_in_chunks_is_the_body_checked(clock, key_pair):
    body = b'{"in": "chunks"}'
    response = async_to_sync(AsyncClient().post)(
        "/api/v2/accounts/list", body, content_type="application/json", headers={
            "Transfer-Encoding": "chunked", "X-Processing-Key": key_pair.public_key,
            "X-Processing-Signature": crypto.sign(key_pair.secret, body),
        },
    )
    assert_accepted(response)


def test_signed_endpoints_take_only_post(client, clock, key_pair):
    for path in ("accounts/list", "currencies/list"):
        for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
            assert_error(api(client, path, pair=key_pair, method=method), "method_not_allowed")
    assert key_pair.fresh().last_used_at is None
    # Logged for the merchant to see, and nothing else.
    assert set(ApiRequest.objects.values_list("status", "error_code")) == {(405, "method_not_allowed")}


def test_method_not_allowed_names_the_allowed_methods(client, clock, key_pair):
    assert api(client, pair=key_pair, method="GET")["Allow"] == "POST"


@pytest.mark.django_db
def test_unknown_path_under_the_api_answers_json_404():
    # CSRF checks on, as for a browser: the API still answers its own JSON, never the HTML 404 or CSRF page.
    client = Client(enforce_csrf_checks=True)
    for path in ("", "nope", "accounts/list/", "accounts", "ping/", "accounts/list/extra", "v3/ping", "%00", "é"):
        for method in ("GET", "POST"):
            response = client.generic(method, f"/api/v2/{path}", b"{}", content_type="application/json")
            assert_error(response, "not_found")


def test_database_error_answers_503_json_and_accepts_nothing(client, clock, key_pair, monkeypatch):
    def broken(request, **options):
        raise OperationalError("database is down")

    monkeypatch.setattr("sandbox.views.find_key", broken)

    assert_error(api(client, pair=key_pair), "service_unavailable")


def test_secret_that_cannot_be_decrypted_fails_closed(client, clock, key_pair):
    # Sealed for another key: authenticated encryption refuses to open it on this row.
    ApiKey.objects.filter(pk=key_pair.key.pk).update(encrypted_secret=seal_secret(UNKNOWN_KEY, key_pair.secret))

    assert_error(api(client, pair=key_pair), "service_unavailable")
    assert key_pair.fresh().last_used_at is None


# The order of the checks


def _faulty_request(client, pair: KeyPair, faults: set[str]):
    body = b"{nope" if "bad_json" in faults else b"{}"
    if "oversized" in faults:
        body = body + b" " * MiB
    key = None if "no_key" in faults else UNKNOWN_KEY if "unknown_key" in faults else pair.public_key
    if "no_signature" in faults:
        signature = None
    elif "bad_signature" in faults:
        signature = crypto.sign(pair.secret + "x", body)
    else:
        signature = crypto.sign(pair.secret, body)
    return api(
        client, pair=pair, body=body, key=key, signature=signature,
        content_type="text/plain" if "wrong_type" in faults else "application/json",
        REMOTE_ADDR=OTHER_IP if "bad_ip" in faults else ALLOWED_IP,
    )


CHECK_ORDER = [
    ({"oversized", "no_key"}, "body_too_large"),
    ({"oversized", "bad_signature", "bad_ip", "bad_json"}, "body_too_large"),
    ({"oversized"}, "body_too_large"),
    ({"no_key", "bad_json"}, "required_header_key"),
    ({"no_key", "no_signature", "bad_ip", "wrong_type"}, "required_header_key"),
    ({"unknown_key", "no_signature", "bad_ip", "bad_json"}, "bad_header_key"),
    ({"unknown_key", "bad_signature"}, "bad_header_key"),
    ({"no_signature", "bad_ip", "bad_json"}, "required_header_signature"),
    ({"bad_signature", "bad_ip"}, "bad_header_signature"),
    ({"bad_signature", "bad_json", "wrong_type"}, "bad_header_signature"),
    ({"bad_ip", "bad_json"}, "ip_not_allowed"),
    ({"bad_ip", "wrong_type"}, "ip_not_allowed"),
    ({"bad_json", "wrong_type"}, "bad_content_format"),
]


@pytest.mark.parametrize("faults, code", CHECK_ORDER, ids=["+".join(sorted(f)) for f, _ in CHECK_ORDER])
def test_first_failing_check_decides_the_answer(client, clock, fenced_pair, faults, code):
    response = _faulty_request(client, fenced_pair, faults)

    assert_error(response, code)
    assert fenced_pair.fresh().last_used_at is None


def test_faultless_request_of_the_check_order_table_is_accepted(client, clock, fenced_pair):
    assert_accepted(_faulty_request(client, fenced_pair, set()))


# Key status


def test_deactivated_key_is_refused_on_the_very_next_request_and_accepted_again_once_reactivated(
    client, clock, owner, merchant, key_pair
):
    assert_accepted(api(client, pair=key_pair))

    deactivate(clock, owner, merchant, key_pair)
    assert_error(api(client, pair=key_pair), "bad_header_key")

    result = services.activate_key(
        actor=owner, merchant=merchant, key_id=key_pair.key.pk, allowlist=parse_allowlist(""),
        code=fresh_code(clock, owner), context=CTX,
    )
    assert result.secret is None  # the same secret as before, not shown again
    assert_accepted(api(client, pair=key_pair))


@pytest.mark.parametrize("status", [KeyStatus.GENERATED, KeyStatus.DEACTIVATED, KeyStatus.ARCHIVED])
def test_key_that_is_not_active_gets_the_same_answer_as_an_unknown_one(client, clock, owner, merchant, status):
    if status == KeyStatus.GENERATED:
        key, secret = generate_key(clock, owner, merchant), "no secret yet"
    else:
        pair = activate_new_key(clock, owner, merchant)
        key, secret = deactivate(clock, owner, merchant, pair), pair.secret
        if status == KeyStatus.ARCHIVED:
            key = services.archive_key(
                actor=owner, merchant=merchant, key_id=key.pk, code=fresh_code(clock, owner), context=CTX
            )
    assert key.status == status

    refused = api(client, key=key.public_key, signature=crypto.sign(secret, b"{}"))
    unknown = api(client, key=UNKNOWN_KEY, signature=crypto.sign(secret, b"{}"))

    assert_error(refused, "bad_header_key")
    assert refused.content == unknown.content
    assert ApiKey.objects.get(pk=key.pk).last_used_at is None


# The allowlist


ALLOWLIST_CASES = [
    # allowlist, REMOTE_ADDR, allowed, address the sandbox reports
    ("198.51.100.7", "198.51.100.7", True, None),
    ("198.51.100.7", "198.51.100.8", False, "198.51.100.8"),
    ("198.51.100.0/24", "198.51.100.254", True, None),
    ("198.51.100.0/24", "198.51.101.1", False, "198.51.101.1"),
    ("2001:db8::5", "2001:db8::5", True, None),
    ("2001:db8::5", "2001:DB8:0:0::5", True, None),
    ("2001:db8::5", "2001:db8::6", False, "2001:db8::6"),
    ("2001:db8:1::/48", "2001:db8:1:ffff::1", True, None),
    ("2001:db8:1::/48", "2001:db8:2::1", False, "2001:db8:2::1"),
    # A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6: they match their IPv4 entries.
    ("198.51.100.7", "::ffff:198.51.100.7", True, None),
    ("198.51.100.0/24", "::ffff:198.51.100.9", True, None),
    ("198.51.100.7", "::ffff:198.51.100.8", False, "198.51.100.8"),
    ("::ffff:198.51.100.7", "198.51.100.7", True, None),
    ("2001:db8::5", "198.51.100.7", False, "198.51.100.7"),
    ("198.51.100.7, 2001:db8::/32", "2001:db8:ab::1", True, None),
    ("", "203.0.113.250", True, None),
    ("", "2001:db8::1", True, None),
]


@pytest.mark.parametrize("allowlist, address, allowed, reported", ALLOWLIST_CASES)
def test_allowlist_is_enforced(client, clock, owner, merchant, allowlist, address, allowed, reported):
    pair = activate_new_key(clock, owner, merchant, allowlist=allowlist)

    response = api(client, pair=pair, REMOTE_ADDR=address)

    if allowed:
        assert_accepted(response)
        seen = ipaddress.ip_address(address)
        assert pair.fresh().last_used_ip == str(getattr(seen, "ipv4_mapped", None) or seen)
    else:
        assert_error(response, "ip_not_allowed")
        assert address_logged_last() == reported
        assert pair.fresh().last_used_at is None


def test_allowlist_change_applies_from_the_next_request(client, clock, owner, merchant, fenced_pair):
    assert_accepted(api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP))
    assert_error(api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP), "ip_not_allowed")

    services.update_allowlist(
        actor=owner, merchant=merchant, key_id=fenced_pair.key.pk, allowlist=parse_allowlist(OTHER_IP),
        code=fresh_code(clock, owner), context=CTX,
    )

    assert_accepted(api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP))
    assert_error(api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP), "ip_not_allowed")


@pytest.mark.parametrize("forwarded", [ALLOWED_IP, f"{OTHER_IP}, {ALLOWED_IP}", f"{ALLOWED_IP}, 127.0.0.1"])
def test_forged_forwarded_for_from_an_untrusted_client_changes_nothing(client, clock, fenced_pair, forwarded):
    refused = api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP, HTTP_X_FORWARDED_FOR=forwarded)
    assert_error(refused, "ip_not_allowed")
    assert address_logged_last() == OTHER_IP

    # And the other way round: a forged header does not get an allowed client refused or misrecorded.
    accepted = api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP, HTTP_X_FORWARDED_FOR=OTHER_IP)
    assert_accepted(accepted)
    assert fenced_pair.fresh().last_used_ip == ALLOWED_IP
    assert list(ApiRequest.objects.order_by("id").values_list("ip_address", flat=True)) == [OTHER_IP, ALLOWED_IP]


TRUSTED_PROXY_CASES = [
    # TRUSTED_PROXIES, REMOTE_ADDR, X-Forwarded-For, the client the sandbox must see
    (["127.0.0.1"], "127.0.0.1", f"{OTHER_IP}, {ALLOWED_IP}", ALLOWED_IP),
    (["127.0.0.1"], "127.0.0.1", f"{ALLOWED_IP}, {OTHER_IP}", OTHER_IP),
    (["127.0.0.1"], "127.0.0.1", f"{ALLOWED_IP}, 127.0.0.1", ALLOWED_IP),
    (["127.0.0.1"], "127.0.0.1", ALLOWED_IP, ALLOWED_IP),
    (["127.0.0.1"], "127.0.0.1", f"  {ALLOWED_IP} ,", ALLOWED_IP),
    (["10.0.0.0/8"], "10.1.2.3", f"{OTHER_IP}, {ALLOWED_IP}, 10.9.9.9", ALLOWED_IP),
    (["10.0.0.0/8"], "::ffff:10.1.2.3", ALLOWED_IP, ALLOWED_IP),
    (["10.0.0.0/8", "2001:db8:ffff::/48"], "2001:db8:ffff::1", f"{ALLOWED_IP}, 10.0.0.1", ALLOWED_IP),
    # A garbled hop cannot be traced further: the last trustworthy sender is the client.
    (["127.0.0.1"], "127.0.0.1", f"{ALLOWED_IP}, garbage", "127.0.0.1"),
    # No header: the proxy itself.
    (["127.0.0.1"], "127.0.0.1", "", "127.0.0.1"),
    # A peer that is not a listed proxy: its header is ignored.
    (["127.0.0.1"], OTHER_IP, ALLOWED_IP, OTHER_IP),
]


@pytest.mark.parametrize("proxies, peer, forwarded, seen", TRUSTED_PROXY_CASES)
def test_forwarded_for_counts_only_from_a_trusted_proxy(client, clock, fenced_pair, proxies, peer, forwarded, seen):
    with override_settings(TRUSTED_PROXIES=proxies):
        response = api(client, pair=fenced_pair, REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)

    if seen == ALLOWED_IP:
        assert_accepted(response)
        assert fenced_pair.fresh().last_used_ip == ALLOWED_IP
    else:
        assert_error(response, "ip_not_allowed")
    assert ApiRequest.objects.get().ip_address == seen


# Bodies


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"a":"\xff\xfe"}', id="not-utf8"),
        pytest.param(b'{"a":"caf\xe9"}', id="latin-1"),
        pytest.param(b"\xed\xa0\x80", id="utf8-encoded-surrogate"),
        pytest.param(b"hello", id="not-json"),
        pytest.param(b"{'a': 1}", id="python-dict"),
        pytest.param(b'{"a":1}{"b":2}', id="two-documents"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b'{"a": NaN}', id="nan-inside"),
        pytest.param(b"[Infinity, -Infinity]", id="infinity"),
        pytest.param(b"[" * 100_000, id="deep-unclosed-nesting"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-object-nesting"),
        pytest.param(b"\x00", id="nul"),
    ],
)
def test_body_that_is_not_utf8_json_is_bad_content(client, clock, key_pair, body):
    response = api(client, pair=key_pair, body=body)

    assert_error(response, "bad_content_format")
    assert key_pair.fresh().last_used_at is None


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_json_in_another_unicode_encoding_is_bad_content(client, clock, key_pair, encoding):
    assert_error(api(client, pair=key_pair, body='{"a": "b"}'.encode(encoding)), "bad_content_format")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(client, clock, key_pair, content_type):
    assert_accepted(api(client, pair=key_pair, content_type=content_type))


# The dashboard session is not an API credential


def test_signed_in_dashboard_session_grants_nothing_on_the_api(clock, owner, key_pair):
    browser = Client(enforce_csrf_checks=True)
    helpers.sign_in_verified(browser, owner)
    assert browser.get(reverse("keys:list", kwargs={"merchant_slug": key_pair.key.merchant.slug})).status_code == 200

    assert_error(api(browser), "required_header_key")
    assert_error(api(browser, key=key_pair.public_key), "required_header_signature")
    assert_error(api(browser, key=key_pair.public_key, signature="0" * 128), "bad_header_signature")
    assert key_pair.fresh().last_used_at is None


# Last used


def test_last_used_is_written_at_most_once_a_minute(client, clock, key_pair):
    assert key_pair.fresh().last_used_at is None
    started = timezone.now()

    assert_accepted(api(client, pair=key_pair, REMOTE_ADDR=ALLOWED_IP))
    key = key_pair.fresh()
    assert (key.last_used_at, key.last_used_ip) == (started, ALLOWED_IP)

    # Within the minute: not written again, not even to record another address.
    clock.advance(59)
    assert_accepted(api(client, pair=key_pair, REMOTE_ADDR=OTHER_IP))
    key = key_pair.fresh()
    assert (key.last_used_at, key.last_used_ip) == (started, ALLOWED_IP)

    clock.advance(2)
    assert_accepted(api(client, pair=key_pair, REMOTE_ADDR=OTHER_IP))
    key = key_pair.fresh()
    assert (key.last_used_at, key.last_used_ip) == (started + timedelta(seconds=61), OTHER_IP)


def test_last_used_records_the_new_address_after_a_minute(client, clock, owner, merchant):
    pair = activate_new_key(clock, owner, merchant)
    assert_accepted(api(client, pair=pair, REMOTE_ADDR=ALLOWED_IP))

    clock.advance(61)
    assert_accepted(api(client, pair=pair, REMOTE_ADDR="2001:db8::5"))

    key = pair.fresh()
    assert (key.last_used_at, key.last_used_ip) == (timezone.now(), "2001:db8::5")


def test_refused_requests_do_not_count_as_use(client, clock, fenced_pair):
    assert_error(api(client, pair=fenced_pair, REMOTE_ADDR=OTHER_IP), "ip_not_allowed")
    assert_error(api(client, pair=fenced_pair, body=b"nope", REMOTE_ADDR=ALLOWED_IP), "bad_content_format")

    key = fenced_pair.fresh()
    assert (key.last_used_at, key.last_used_ip) == (None, None)


def test_last_used_is_shown_in_the_key_list(client, clock, owner, merchant, fenced_pair):
    assert_accepted(api(client, pair=fenced_pair, REMOTE_ADDR=ALLOWED_IP))
    used_at = fenced_pair.fresh().last_used_at
    clock.advance(120)

    helpers.sign_in_verified(client, owner)
    page = client.get(reverse("keys:list", kwargs={"merchant_slug": merchant.slug})).content.decode()

    assert dateformat.format(timezone.localtime(used_at), "Y-m-d H:i") in page
    assert ALLOWED_IP in page
    assert "Never" not in page


def _trivial_signed_view():
    return signed_endpoint(lambda request, signed: JsonResponse({"data": ["ok"]}))


def test_signed_path_costs_at_most_two_queries_once_last_used_is_fresh(
    rf, clock, key_pair, django_assert_num_queries, django_assert_max_num_queries
):
    """Key lookup and request-log row; "last used" costs an UPDATE only once a minute."""
    view = _trivial_signed_view()

    def request():
        return rf.generic(
            "POST", "/api/v2/accounts/list", b"{}", content_type="application/json",
            HTTP_X_PROCESSING_KEY=key_pair.public_key, HTTP_X_PROCESSING_SIGNATURE=crypto.sign(key_pair.secret, b"{}"),
        )

    with django_assert_num_queries(3) as stale:
        assert view(request()).status_code == 200
    assert sum(query["sql"].startswith("UPDATE") for query in stale.captured_queries) == 1

    clock.advance(30)
    with django_assert_max_num_queries(2) as fresh:
        assert view(request()).status_code == 200
    assert not any(query["sql"].startswith("UPDATE") for query in fresh.captured_queries)
    assert ApiRequest.objects.count() == 2


def test_real_endpoint_writes_no_key_row_while_last_used_is_fresh(
    client, clock, key_pair, django_assert_max_num_queries
):
    assert_accepted(api(client, pair=key_pair))
    clock.advance(10)

    # Key with balances (one query), and (with the test suite's unbatched log) the request-log row.
    with django_assert_max_num_queries(2) as captured:
        assert_accepted(api(client, pair=key_pair))

    assert not [query for query in captured.captured_queries if "keys_apikey" in query["sql"]
                and not query["sql"].startswith("SELECT")]


def test_accounts_list_without_any_currency_answers_an_empty_list(client, clock, key_pair):
    Currency.objects.all().delete()

    response = api(client, pair=key_pair)

    assert response.status_code == 200
    assert response.json() == {"data": []}
    assert key_pair.fresh().last_used_at is not None


def test_key_of_another_merchant_sees_only_its_own_balances(client, clock, owner, merchant, key_pair):
    other = helpers.create_merchant()
    other_owner = helpers.create_member(other, Role.OWNER)
    other_pair = activate_new_key(clock, other_owner, other)
    Balance.objects.create(merchant=merchant, currency_id=1, amount=Decimal("0.04"))
    Balance.objects.create(merchant=other, currency_id=1, amount=Decimal("7"))

    assert api(client, pair=key_pair).json()["data"][0]["balance"] == "0.04"
    assert api(client, pair=other_pair).json()["data"][0]["balance"] == "7"
    # Each merchant's key signs only for itself.
    assert_error(api(client, pair=key_pair, secret=other_pair.secret), "bad_header_signature")
