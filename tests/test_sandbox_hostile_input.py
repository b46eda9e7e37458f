"""Whatever a client sends, the sandbox API answers with one of its own statuses and a JSON error, never a 500.

Generated bodies, header values (non-ASCII, very long, repeated), content types, methods, paths and forwarded
chains. The test client re-raises any exception a view lets escape, so a crash fails the test loudly.
"""
from __future__ import annotations

import json
import random

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import crypto
from sandbox.authentication import MAX_BODY_BYTES, parse_json
from sandbox.errors import BadContent
from sandbox.models import ApiRequest
from .sandbox_support import ALLOWED_IP, UNKNOWN_KEY, api, assert_error


ALLOWED_STATUSES = {200, 400, 403, 404, 405, 413}
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# What can arrive in a header: WSGI gives header values as latin-1 decoded text, but a test may hand over anything.
header_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0xFF), max_size=200),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=120, max_size=136),
    st.builds(lambda n: "a" * n, st.integers(min_value=1_000, max_value=20_000)),
)
content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "application/json;"]),
    st.text(max_size=60),
)


def assert_sandbox_answer(response) -> dict:
    assert response.status_code in ALLOWED_STATUSES, response.content[:300]
    assert response["Content-Type"] == "application/json"
    answer = json.loads(response.content)
    if response.status_code == 200:
        assert isinstance(answer["data"], list)
    else:
        assert set(answer) >= {"error", "code"} and isinstance(answer["code"], str) and answer["code"]
    return answer


@HYPOTHESIS
@given(body=st.binary(max_size=4096), content_type=content_types, signed=st.booleans())
def test_random_bodies(client, clock, key_pair, body, content_type, signed):
    response = api(
        client, pair=key_pair, body=body, content_type=content_type,
        signature=crypto.sign(key_pair.secret, body) if signed else "0" * 128,
    )

    answer = assert_sandbox_answer(response)
    if not signed:
        assert answer["code"] == "bad_header_signature"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, MAX_BODY_BYTES + 4096), seed=st.integers(0, 2**32 - 1), signed=st.booleans())
def test_random_bodies_of_any_length_up_to_the_limit_and_past_it(client, clock, key_pair, size, seed, signed):
    body = random.Random(seed).randbytes(size)
    response = api(
        client, pair=key_pair, body=body, content_type="application/json",
        signature=crypto.sign(key_pair.secret, body) if signed else "0" * 128,
    )

    answer = assert_sandbox_answer(response)
    if size > MAX_BODY_BYTES:
        assert (response.status_code, answer["code"]) == (413, "body_too_large")
    elif not signed:
        assert answer["code"] == "bad_header_signature"


@HYPOTHESIS
@given(key=header_text, signature=header_text)
def test_random_key_and_signature_headers(client, clock, key_pair, key, signature):
    response = api(client, key=key, signature=signature)

    answer = assert_sandbox_answer(response)
    assert answer["code"] in {"required_header_key", "bad_header_key"}


@HYPOTHESIS
@given(signature=header_text)
def test_random_signatures_for_a_real_key(client, clock, key_pair, signature):
    response = api(client, pair=key_pair, signature=signature)

    answer = assert_sandbox_answer(response)
    assert answer["code"] in {"required_header_signature", "bad_header_signature"}
    assert key_pair.fresh().last_used_at is None


@pytest.mark.parametrize(
    "key, signature, code",
    [
        # A WSGI server joins a repeated header's values with commas.
        ("{key},{key}", "{signature}", "bad_header_key"),
        ("{key}, {key}", "{signature}", "bad_header_key"),
        ("{key},{other}", "{signature}", "bad_header_key"),
        ("{key}", "{signature},{signature}", "bad_header_signature"),
        ("{key}", "{signature}, {signature}", "bad_header_signature"),
        ("{key}", "{signature},", "bad_header_signature"),
        ("{key} ", "{signature}", "bad_header_key"),
        ("{key}\n", "{signature}", "bad_header_key"),
        ("{key}", "{signature}\x00", "bad_header_signature"),
    ],
)
def test_repeated_or_padded_headers_are_refused(client, clock, key_pair, key, signature, code):
    values = {"key": key_pair.public_key, "other": UNKNOWN_KEY, "signature": crypto.sign(key_pair.secret, b"{}")}

    response = api(client, key=key.format(**values), signature=signature.format(**values))

    assert_error(response, code)
    assert key_pair.fresh().last_used_at is None


@HYPOTHESIS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]),
    path=st.one_of(
        st.sampled_from(["accounts/list", "currencies/list", "ping", "", "accounts/list/"]),
        st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="?#"), max_size=80),
    ),
)
def test_random_methods_and_paths(client, clock, key_pair, method, path):
    response = api(client, path, pair=key_pair, method=method)

    if path == "ping" and method in ("GET", "HEAD"):
        assert response.status_code == 200
    elif method == "HEAD":
        assert response.status_code in ALLOWED_STATUSES and response.content == b""
    else:
        assert_sandbox_answer(response)


@HYPOTHESIS
@given(
    remote=st.one_of(
        st.ip_addresses().map(str), st.sampled_from(["127.0.0.1", "", "unix:", "::ffff:127.0.0.1", "fe80::1%eth0"])
    ),
    forwarded=st.one_of(
        st.lists(
            st.one_of(st.ip_addresses().map(str), st.just(ALLOWED_IP), st.just("fe80::1%eth0"), st.text(max_size=30)),
            max_size=6,
        ).map(", ".join),
        st.text(max_size=200),
    ),
)
def test_random_client_addresses_and_forwarded_chains(client, clock, fenced_pair, remote, forwarded):
    with override_settings(TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8", "fd00::/8"]):
        response = api(client, pair=fenced_pair, REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

    answer = assert_sandbox_answer(response)
    logged = ApiRequest.objects.order_by("-id").first()
    assert logged.status == response.status_code
    if response.status_code == 403:
        assert answer["code"] == "ip_not_allowed"
        assert logged.ip_address != ALLOWED_IP
    else:
        assert logged.ip_address == ALLOWED_IP
    # The log column keeps the address without an IPv6 zone id.
    assert logged.ip_address is None or "%" not in logged.ip_address


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", " ", str(2**70), "1048577"])
def test_garbled_or_lying_content_length(client, clock, key_pair, length):
    response = api(client, pair=key_pair, CONTENT_LENGTH=length)

    # Either refused outright, or the body read is not the body signed.
    assert assert_sandbox_answer(response)["code"] in {"bad_content_format", "body_too_large", "bad_header_signature"}


@pytest.mark.parametrize("make_key", [
    lambda key: key.upper(),
    lambda key: "sbx_" + "g" * 40,
    lambda key: key[:-1] + "é",
    lambda key: " " + key[:-1],
    lambda key: key[:-1] + "\n",
])
def test_a_value_of_a_keys_length_but_not_its_shape_is_refused_without_a_query(
    client, clock, key_pair, make_key, django_assert_num_queries
):
    near_key = make_key(key_pair.public_key)
    assert len(near_key) == len(key_pair.public_key)

    with django_assert_num_queries(0):
        response = api(client, pair=key_pair, key=near_key)

    assert_error(response, "bad_header_key")
    assert key_pair.fresh().last_used_at is None
    assert not ApiRequest.objects.exists()


json_whitespace = st.text(alphabet=" \t\n\r\x0b\x0c\xa0\u2028", max_size=3)
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=6,
).map(json.dumps)


def standard_decoding(body: bytes) -> tuple:
    decoder = json.JSONDecoder(parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    try:
        return "accepted", decoder.decode(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return "refused",


def sandbox_decoding(body: bytes) -> tuple:
    try:
        return "accepted", parse_json(body, "application/json")
    except BadContent:
        return "refused",


@settings(max_examples=500, deadline=None)
@given(before=json_whitespace, document=json_documents | st.text(max_size=8), after=json_whitespace,
       tail=st.sampled_from(["", "x", "{}", "0", "NaN", "]", "\x00"]))
def test_bodies_are_read_as_the_standard_json_decoder_reads_them(before, document, after, tail):
    body = (before + document + after + tail).encode()

    assert sandbox_decoding(body) == standard_decoding(body)
