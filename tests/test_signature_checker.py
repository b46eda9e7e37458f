"""The signature checker: whether a pasted signature matches the active key, and which mistake explains it if not.

Each hint is proved on a signature made by actually committing that mistake, both in ``diagnose`` itself and
through the Owner's page; no answer ever contains the secret or the signature that would have matched.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from django.urls import reverse
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.models import Role
from keys import crypto
from sandbox.signature_check import diagnose

from . import helpers
from .sandbox_support import VECTOR_SIGNATURE, activate_new_key, deactivate

BODY = '{"currency":"BTC","foreign_id":"123456"}'
SECRET = "AbCdEfG123456"
PUBLIC_KEY = "sbx_" + "ab" * 20
OTHER_PUBLIC_KEY = "sbx_" + "cd" * 20
OTHER_SECRET = "another-secret-of-this-merchant"

HINTS = {
    "base64": "The signature is Base64",
    "upper": "upper-case hexadecimal",
    "newline": "different trailing newline",
    "whitespace": "the same JSON written differently (whitespace, pretty-printing or escaped",
    "other_key": "secret of another API key of this merchant",
    "api_key": "signed with the API key itself",
    "none": "No common mistake explains it.",
}


def digest(secret: str, body: str) -> bytes:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha512).digest()


def pretty(body: str) -> str:
    return json.dumps(json.loads(body), indent=2)


# Each mistake: (body pasted into the checker, how the integrator computed the signature), and the hint it earns.
# ``secret``, ``public_key`` and ``other_secret`` are those of the merchant's keys.
MISTAKES = {
    "base64": (lambda s, p, o: (BODY, base64.b64encode(digest(s, BODY)).decode()), "base64"),
    "base64-urlsafe-unpadded": (
        lambda s, p, o: (BODY, base64.urlsafe_b64encode(digest(s, BODY)).decode().rstrip("=")), "base64"),
    "upper-case hex": (lambda s, p, o: (BODY, crypto.sign(s, BODY.encode()).upper()), "upper"),
    "signed with a trailing newline": (lambda s, p, o: (BODY, crypto.sign(s, (BODY + "\n").encode())), "newline"),
    "signed with a trailing CRLF": (lambda s, p, o: (BODY, crypto.sign(s, (BODY + "\r\n").encode())), "newline"),
    "sent with a trailing newline": (lambda s, p, o: (BODY + "\n", crypto.sign(s, BODY.encode())), "newline"),
    "signed pretty, sent compact": (lambda s, p, o: (BODY, crypto.sign(s, pretty(BODY).encode())), "whitespace"),
    "signed compact, sent pretty": (lambda s, p, o: (pretty(BODY), crypto.sign(s, BODY.encode())), "whitespace"),
    "signed with spaces after separators": (
        lambda s, p, o: (BODY, crypto.sign(s, json.dumps(json.loads(BODY)).encode())), "whitespace"),
    "another key's secret": (lambda s, p, o: (BODY, crypto.sign(o, BODY.encode())), "other_key"),
    "signed with the API key": (lambda s, p, o: (BODY, crypto.sign(p, BODY.encode())), "api_key"),
    "unrelated": (lambda s, p, o: (BODY, "0" * 128), "none"),
    "another body altogether": (lambda s, p, o: (BODY, crypto.sign(s, b'{"currency":"ETH"}')), "none"),
}


def assert_reveals_nothing(text: str, *, secret: str, body: str, others=(), echoed: str = "") -> None:
    """Neither the secret, nor the signature that would match ``body`` (in any form), nor other secrets.

    ``echoed`` is what the user typed, which a page may show back in its form: it reveals nothing new.
    """
    if echoed:
        text = text.replace(escape(echoed), "")
    expected = crypto.sign(secret, body.encode())
    for hidden in (secret, expected, expected[:32], base64.b64encode(bytes.fromhex(expected)).decode(), *others):
        assert hidden not in text


# diagnose, on its own


def test_matching_signature_matches_with_no_hints():
    assert diagnose(BODY.encode(), crypto.sign(SECRET, BODY.encode()), secret=SECRET, public_key=PUBLIC_KEY,
                    other_secrets={}).matches


def test_reference_vector_matches():
    diagnosis = diagnose(BODY.encode(), VECTOR_SIGNATURE, secret=SECRET, public_key=PUBLIC_KEY, other_secrets={})
    assert (diagnosis.matches, diagnosis.hints) == (True, ())


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_earns_its_hint(mistake):
    make, hint = MISTAKES[mistake]
    body, signature = make(SECRET, PUBLIC_KEY, OTHER_SECRET)

    diagnosis = diagnose(body.encode(), signature, secret=SECRET, public_key=PUBLIC_KEY,
                         other_secrets={OTHER_PUBLIC_KEY: OTHER_SECRET})

    assert not diagnosis.matches
    assert any(HINTS[hint] in text for text in diagnosis.hints), diagnosis.hints
    # Hints come from trying each mistake: the unrelated hints are not offered.
    for other, text in HINTS.items():
        if other not in (hint, "whitespace", "newline"):
            assert not any(text in given for given in diagnosis.hints), (other, diagnosis.hints)
    for text in diagnosis.hints:
        assert_reveals_nothing(text, secret=SECRET, body=body, others=(OTHER_SECRET,))


def test_a_trailing_newline_earns_that_hint_alone():
    body = BODY + "\n"  # pasted with a newline; the signature was made over the body without it
    diagnosis = diagnose(body.encode(), crypto.sign(SECRET, BODY.encode()), secret=SECRET, public_key=PUBLIC_KEY,
                         other_secrets={})

    assert len(diagnosis.hints) == 1 and HINTS["newline"] in diagnosis.hints[0], diagnosis.hints


def test_escaped_characters_are_named_among_the_ways_json_is_written_differently():
    sent, signed = '{"name":"café"}', '{"name":"caf\\u00e9"}'
    diagnosis = diagnose(sent.encode(), crypto.sign(SECRET, signed.encode()), secret=SECRET, public_key=PUBLIC_KEY,
                         other_secrets={})

    assert diagnosis.hints == (next(text for text in diagnosis.hints if HINTS["whitespace"] in text),)


def test_other_key_hint_names_that_key():
    diagnosis = diagnose(BODY.encode(), crypto.sign(OTHER_SECRET, BODY.encode()), secret=SECRET,
                         public_key=PUBLIC_KEY, other_secrets={OTHER_PUBLIC_KEY: OTHER_SECRET})

    assert OTHER_PUBLIC_KEY in diagnosis.hints[0]


def test_body_pasted_from_a_browser_with_crlf_line_breaks_still_matches():
    signed = pretty(BODY)  # LF line breaks, as the integrator's code sends them
    pasted = signed.replace("\n", "\r\n")  # as a browser's textarea posts them

    assert diagnose(pasted.encode(), crypto.sign(SECRET, signed.encode()), secret=SECRET, public_key=PUBLIC_KEY,
                    other_secrets={}).matches


LONE_SURROGATE_BODY = '{"name":"\\ud83d"}'  # valid JSON: a truncated emoji escape, as a buggy client writes it

def test_body_with_a_lone_surrogate_escape_is_diagnosed():
    body = LONE_SURROGATE_BODY.encode()
    assert diagnose(body, crypto.sign(SECRET, body), secret=SECRET, public_key=PUBLIC_KEY, other_secrets={}).matches
    assert not diagnose(body, "0" * 128, secret=SECRET, public_key=PUBLIC_KEY, other_secrets={}).matches


def test_signature_with_whitespace_around_it_still_matches():
    assert diagnose(BODY.encode(), f"  {crypto.sign(SECRET, BODY.encode())}\n", secret=SECRET,
                    public_key=PUBLIC_KEY, other_secrets={}).matches


@settings(max_examples=60, deadline=None)
@given(body=st.text(max_size=200), signature=st.text(max_size=200), flavour=st.sampled_from(list(MISTAKES)))
def test_hints_never_reveal_the_secret_or_the_expected_signature(body, signature, flavour):
    # Random pastes, and random pastes next to a crafted mistake: never an exception, never a leak.
    for pasted_body, pasted_signature in ((body, signature), MISTAKES[flavour][0](SECRET, PUBLIC_KEY, OTHER_SECRET)):
        diagnosis = diagnose(pasted_body.encode("utf-8", "surrogatepass"), pasted_signature, secret=SECRET,
                             public_key=PUBLIC_KEY, other_secrets={OTHER_PUBLIC_KEY: OTHER_SECRET})
        assert diagnosis.matches or diagnosis.hints
        for text in diagnosis.hints:
            assert_reveals_nothing(text, secret=SECRET, body=pasted_body, others=(OTHER_SECRET,))


# The Owner's page


def checker_url(merchant) -> str:
    return reverse("integration:signature-check", kwargs={"merchant_slug": merchant.slug})


@pytest.fixture
def checker(client, clock, owner, merchant):
    """The merchant with a deactivated old key and an active new one, and a signed-in Owner's client."""
    old = activate_new_key(clock, owner, merchant, name="old")
    deactivate(clock, owner, merchant, old)
    new = activate_new_key(clock, owner, merchant, name="new")
    helpers.sign_in_verified(client, owner)
    return new, old


# Through the page, one crafted mistake per hint (diagnose itself is tested over all of them above).
PAGE_MISTAKES = [
    "base64", "upper-case hex", "signed with a trailing newline", "signed pretty, sent compact",
    "signed compact, sent pretty", "another key's secret", "signed with the API key", "unrelated",
]


@pytest.mark.parametrize("mistake", PAGE_MISTAKES)
def test_page_gives_each_hint_on_a_crafted_mistake(client, merchant, checker, mistake):
    active, old = checker
    make, hint = MISTAKES[mistake]
    body, signature = make(active.secret, active.public_key, old.secret)

    response = client.post(checker_url(merchant), {"body": body, "signature": signature})

    assert response.status_code == 200
    diagnosis = response.context["diagnosis"]
    assert not diagnosis.matches
    assert any(HINTS[hint] in text for text in diagnosis.hints), diagnosis.hints
    page = response.content.decode()
    assert "The signature does not match." in page
    if hint == "other_key":
        assert old.public_key in " ".join(diagnosis.hints)
    assert_reveals_nothing(page, secret=active.secret, body=body, others=(old.secret,), echoed=signature)


def test_page_says_when_the_signature_matches(client, merchant, checker):
    active, old = checker

    signature = crypto.sign(active.secret, BODY.encode())
    response = client.post(checker_url(merchant), {"body": BODY, "signature": signature})

    assert response.status_code == 200
    assert response.context["diagnosis"].matches
    page = response.content.decode()
    assert "The signature matches." in page
    assert active.secret not in page and old.secret not in page
    assert active.key.secret_fingerprint in page


def test_old_keys_signature_does_not_match_the_active_key(client, merchant, checker):
    active, old = checker

    response = client.post(checker_url(merchant), {"body": BODY, "signature": crypto.sign(old.secret, BODY.encode())})

    assert not response.context["diagnosis"].matches
    assert_reveals_nothing(response.content.decode(), secret=active.secret, body=BODY, others=(old.secret,))


def test_page_without_an_active_key_says_so(client, clock, owner, merchant):
    pair = activate_new_key(clock, owner, merchant)
    deactivate(clock, owner, merchant, pair)
    helpers.sign_in_verified(client, owner)

    shown = client.get(checker_url(merchant))
    posted = client.post(checker_url(merchant), {"body": BODY, "signature": crypto.sign(pair.secret, BODY.encode())})

    for response in (shown, posted):
        assert response.status_code == 200
        assert "No API key is active" in response.content.decode()
        assert response.context.get("diagnosis") is None
        assert pair.secret not in response.content.decode()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"body": BODY, "signature": ""}, "Paste the signature your code computed."),
        ({"body": BODY, "signature": "a" * 1025}, "far longer than an HMAC-SHA512 signature"),
    ],
)
def test_page_refuses_unusable_input(client, merchant, checker, data, message):
    response = client.post(checker_url(merchant), data)

    assert response.status_code == 200
    assert response.context["diagnosis"] is None
    assert message in response.content.decode()


def test_a_body_over_one_mebibyte_in_utf8_is_refused_though_it_has_fewer_characters(client, merchant, checker):
    active, _ = checker
    body = '"' + "é" * (2**19) + '"'  # 524,290 characters, 1,048,578 bytes
    response = client.post(checker_url(merchant), {"body": body, "signature": crypto.sign(active.secret, body.encode())})

    assert response.context["diagnosis"] is None
    assert "The sandbox refuses bodies larger than 1 MiB." in response.content.decode()


def test_the_form_is_sent_as_multipart_so_a_large_body_is_not_percent_encoded_past_djangos_limit(client, merchant,
                                                                                                  checker):
    assert 'enctype="multipart/form-data"' in client.get(checker_url(merchant)).content.decode()


def test_members_who_are_not_owners_are_refused(client, clock, owner, merchant):
    pair = activate_new_key(clock, owner, merchant)
    for role in (Role.VIEW, Role.EXCHANGE, Role.LIMITS, Role.RESTRICTED):
        helpers.sign_in_verified(client, helpers.create_member(merchant, role))

        assert client.get(checker_url(merchant)).status_code == 403, role
        signature = crypto.sign(pair.secret, BODY.encode())
        response = client.post(checker_url(merchant), {"body": BODY, "signature": signature})
        assert response.status_code == 403
        assert b"matches" not in response.content


def test_another_merchants_checker_is_not_found(client, clock, owner, merchant, checker):
    other = helpers.create_merchant()
    other_pair = activate_new_key(clock, helpers.create_member(other, Role.OWNER), other)

    signature = crypto.sign(other_pair.secret, BODY.encode())
    response = client.post(checker_url(other), {"body": BODY, "signature": signature})

    assert response.status_code == 404


def test_page_survives_a_body_with_a_lone_surrogate_escape(client, merchant, checker):
    active, old = checker

    response = client.post(checker_url(merchant), {"body": LONE_SURROGATE_BODY, "signature": "0" * 128})

    assert response.status_code == 200
    assert not response.context["diagnosis"].matches


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.text(max_size=300), signature=st.text(min_size=1, max_size=300))
def test_page_never_fails_and_never_reveals_the_secret(client, merchant, checker, body, signature):
    active, old = checker

    response = client.post(checker_url(merchant), {"body": body, "signature": signature})

    assert response.status_code == 200
    assert_reveals_nothing(
        response.content.decode(), secret=active.secret, body=body, others=(old.secret,), echoed=signature
    )
